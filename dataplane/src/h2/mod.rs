//! HTTP/2 pieces shared by weir's connections: frame layout and HPACK (RFC 9113, RFC 7541).

pub(crate) mod conn;
pub(crate) mod frame;
pub(crate) mod hpack;
pub(crate) mod message;
