//! Certificates from `kubernetes.io/tls` Secrets.

use std::collections::HashMap;

use weir_dataplane::TlsCertificate;

use crate::index::Index;
use crate::object::ObjectKey;

pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Parses each Secret at most once per compile.
#[derive(Default)]
pub(super) struct Certificates {
    parsed: HashMap<ObjectKey, Result<TlsCertificate, String>>,
}

impl Certificates {
    pub(super) fn get(&mut self, index: &Index, key: &ObjectKey) -> Result<TlsCertificate, String> {
        self.parsed
            .entry(key.clone())
            .or_insert_with(|| load(index, key))
            .clone()
    }
}

fn load(index: &Index, key: &ObjectKey) -> Result<TlsCertificate, String> {
    let secret = &index
        .secrets
        .get(key)
        .ok_or_else(|| format!("secret {key} not found"))?
        .object;
    if secret.type_.as_deref() != Some(TLS_SECRET_TYPE) {
        return Err(format!(
            "secret {key} has type {:?}, want {TLS_SECRET_TYPE}",
            secret.type_.as_deref().unwrap_or("")
        ));
    }
    let field = |name: &str| -> Result<Vec<u8>, String> {
        if let Some(v) = secret.data.as_ref().and_then(|d| d.get(name)) {
            return Ok(v.0.clone());
        }
        if let Some(v) = secret.string_data.as_ref().and_then(|d| d.get(name)) {
            return Ok(v.as_bytes().to_vec());
        }
        Err(format!("secret {key} has no data.{name}"))
    };
    let cert = field("tls.crt")?;
    let pkey = field("tls.key")?;
    TlsCertificate::from_pem(&key.to_string(), &cert, &pkey)
        .map_err(|e| format!("secret {key}: {e}"))
}
