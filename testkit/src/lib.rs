//! Test support for weir's end-to-end tests: real backends, the real binary, real clients.

pub mod backend;
pub mod certs;
pub mod client;
pub mod cluster;
pub mod h2peer;
pub mod manifests;
pub mod weir;

pub use backend::Backend;
pub use client::{Proto, Reply};
pub use weir::{TempDir, Weir};
