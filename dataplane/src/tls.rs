//! Server certificates: parsing PEM into rustls keys and choosing one by SNI from the table.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Serialize, Serializer};

use crate::state::Snapshot;

/// Why a certificate could not be loaded. The caller names the object it came from.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no PEM certificate found")]
    NoCertificate,
    #[error("no PEM private key found")]
    NoPrivateKey,
    #[error("invalid PEM: {0}")]
    Pem(std::io::Error),
    #[error("unsupported private key: {0}")]
    Key(rustls::Error),
    #[error("certificate and private key do not match: {0}")]
    Mismatch(rustls::Error),
}

/// A certificate chain with its signing key, and the name of the object it came from.
#[derive(Clone)]
pub struct TlsCertificate {
    source: Arc<str>,
    key: Arc<CertifiedKey>,
}

impl TlsCertificate {
    /// Parses a PEM chain and PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(source: &str, cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let chain = rustls_pemfile::certs(&mut &cert_pem[..])
            .collect::<Result<Vec<_>, _>>()
            .map_err(TlsError::Pem)?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let key = rustls_pemfile::private_key(&mut &key_pem[..])
            .map_err(TlsError::Pem)?
            .ok_or(TlsError::NoPrivateKey)?;
        let provider = rustls::crypto::ring::default_provider();
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(TlsError::Key)?;
        let certified = CertifiedKey::new(chain, signing_key);
        certified.keys_match().map_err(TlsError::Mismatch)?;
        Ok(Self {
            source: source.into(),
            key: Arc::new(certified),
        })
    }

    /// The object the certificate came from, e.g. `default/shop-tls`.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.key
    }
}

impl PartialEq for TlsCertificate {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.key.cert == other.key.cert
    }
}

impl fmt::Debug for TlsCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsCertificate")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Only the source is shown: key material never leaves the process.
impl Serialize for TlsCertificate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// Picks the certificate for each handshake from the current snapshot (one atomic load).
#[derive(Debug)]
pub(crate) struct SniResolver {
    pub(crate) current: Arc<ArcSwap<Snapshot>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let snapshot = self.current.load();
        let cert = snapshot.table.tls().lookup(hello.server_name())?;
        Some(cert.certified_key().clone())
    }
}

/// The rustls server configuration for the HTTPS listener, offering h2 and http/1.1 by ALPN.
pub(crate) fn server_config(current: Arc<ArcSwap<Snapshot>>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { current }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}
