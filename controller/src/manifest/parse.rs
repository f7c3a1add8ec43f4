//! Multi-document YAML files → objects, with diagnostics that name the file, the document, the
//! object and the field. A file or object that does not parse keeps its last good version.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml::Value;

use crate::compact;
use crate::diagnostic::Diagnostic;
use crate::object::{Kind, Object, ObjectKey, ObjectRef, Origin};

/// The objects read from one file, by kind and namespace/name.
pub type FileObjects = BTreeMap<ObjectRef, (Object, Origin)>;

#[derive(Debug, Default)]
pub struct FileParse {
    pub objects: FileObjects,
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses `text` (the contents of `path`). `previous` is what the file held at its last good
/// read: a document that no longer parses keeps its previous objects.
pub fn parse(path: &Path, text: &str, previous: Option<&FileObjects>) -> FileParse {
    let mut out = FileParse::default();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let origin = Origin {
            file: path.to_path_buf(),
            document: i + 1,
        };
        match Value::deserialize(document) {
            Ok(value) => read_value(value, &origin, previous, &mut out),
            Err(e) => {
                // A YAML syntax error leaves the rest of the file unreadable: keep it whole.
                let kept = previous.map_or(0, |p| p.len());
                out.diagnostics.push(
                    Diagnostic::error(
                        None,
                        None,
                        format!("invalid YAML: {e}; keeping the {kept} object(s) this file held at its last good read"),
                    )
                    .at(Some(origin)),
                );
                out.objects = previous.cloned().unwrap_or_default();
                return out;
            }
        }
    }
    out
}

fn str_field<'v>(value: &'v Value, path: &[&str]) -> Option<&'v str> {
    path.iter().try_fold(value, |v, k| v.get(*k))?.as_str()
}

fn read_value(value: Value, origin: &Origin, previous: Option<&FileObjects>, out: &mut FileParse) {
    if value.is_null() {
        return;
    }
    let report = |out: &mut FileParse, object: Option<ObjectRef>, field: &str, message: String| {
        let field = (!field.is_empty()).then(|| field.to_string());
        out.diagnostics
            .push(Diagnostic::error(object, field, message).at(Some(origin.clone())));
    };
    if !value.is_mapping() {
        report(out, None, "", "document is not a mapping".into());
        return;
    }
    let (Some(api_version), Some(kind_name)) = (
        str_field(&value, &["apiVersion"]),
        str_field(&value, &["kind"]),
    ) else {
        report(out, None, "", "document has no apiVersion or kind".into());
        return;
    };
    if kind_name == "List" {
        if let Some(Value::Sequence(items)) = value.get("items") {
            for item in items.clone() {
                read_value(item, origin, previous, out);
            }
        }
        return;
    }
    let Some(kind) = Kind::from_type(api_version, kind_name) else {
        tracing::debug!(%origin, api_version, kind = kind_name, "ignoring a kind weir does not read");
        return;
    };
    let Some(name) = str_field(&value, &["metadata", "name"]).map(str::to_string) else {
        report(out, None, "metadata.name", format!("{kind} has no name"));
        return;
    };
    let namespace = if kind.is_namespaced() {
        str_field(&value, &["metadata", "namespace"])
            .unwrap_or("default")
            .to_string()
    } else {
        String::new()
    };
    let object_ref = ObjectRef {
        kind,
        key: ObjectKey::new(namespace.clone(), name),
    };
    let object = match typed(kind, value) {
        Ok(mut object) => {
            if kind.is_namespaced() {
                object.metadata_mut().namespace = Some(namespace);
            }
            object
        }
        Err((field, message)) => {
            let kept = previous.and_then(|p| p.get(&object_ref)).cloned();
            let note = if kept.is_some() {
                "; keeping its last good version"
            } else {
                "; skipped"
            };
            report(
                out,
                Some(object_ref.clone()),
                &field,
                format!("{message}{note}"),
            );
            if let Some((object, _)) = kept {
                insert(out, object_ref, object, origin);
            }
            return;
        }
    };
    insert(out, object_ref, object, origin);
}

fn insert(out: &mut FileParse, object_ref: ObjectRef, object: Object, origin: &Origin) {
    if let Some((_, first)) = out.objects.get(&object_ref) {
        let message = format!("defined again; the definition at {first} is used");
        out.diagnostics
            .push(Diagnostic::warning(Some(object_ref), None, message).at(Some(origin.clone())));
        return;
    }
    out.objects.insert(object_ref, (object, origin.clone()));
}

/// Deserializes one object and trims its metadata, as the Kubernetes source does.
fn de<T: DeserializeOwned + Resource>(value: Value) -> Result<T, (String, String)> {
    let mut object: T = serde_path_to_error::deserialize(value).map_err(|e| {
        (
            e.path().to_string().trim_start_matches('.').to_string(),
            e.into_inner().to_string(),
        )
    })?;
    compact::metadata(object.meta_mut());
    Ok(object)
}

fn typed(kind: Kind, value: Value) -> Result<Object, (String, String)> {
    Ok(match kind {
        Kind::Ingress => Object::Ingress(Arc::new(compact::ingress(de(value)?))),
        Kind::IngressClass => Object::IngressClass(Arc::new(de(value)?)),
        Kind::Service => Object::Service(Arc::new(compact::service(de(value)?))),
        Kind::EndpointSlice => Object::EndpointSlice(Arc::new(compact::endpoint_slice(de(value)?))),
        Kind::Secret => Object::Secret(Arc::new(de(value)?)),
        Kind::ConfigMap => Object::ConfigMap(Arc::new(de(value)?)),
        Kind::BackendPolicy => Object::BackendPolicy(Arc::new(de(value)?)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop}
spec:
  rules:
  - http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
"#;

    #[test]
    fn reads_known_kinds_and_defaults_namespace() {
        let parsed = parse(Path::new("a.yaml"), GOOD, None);
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        let (key, (object, origin)) = parsed.objects.iter().next().unwrap();
        assert_eq!(key.to_string(), "Ingress default/shop");
        assert_eq!(object.metadata().namespace.as_deref(), Some("default"));
        assert_eq!(origin.document, 1);
    }

    #[test]
    fn bad_field_names_path_and_keeps_last_good() {
        let good = parse(Path::new("a.yaml"), GOOD, None);
        let bad = GOOD.replace("number: 80", "number: eighty");
        let parsed = parse(Path::new("a.yaml"), &bad, Some(&good.objects));
        let d = &parsed.diagnostics[0];
        assert_eq!(
            d.field.as_deref(),
            Some("spec.rules[0].http.paths[0].backend.service.port.number")
        );
        assert!(
            d.to_string()
                .starts_with("a.yaml (document 1): Ingress default/shop: spec.rules"),
            "{d}"
        );
        assert_eq!(parsed.objects, good.objects);
    }

    #[test]
    fn yaml_syntax_error_keeps_whole_file() {
        let good = parse(Path::new("a.yaml"), GOOD, None);
        let parsed = parse(Path::new("a.yaml"), "kind: [unclosed", Some(&good.objects));
        assert_eq!(parsed.objects, good.objects);
        assert!(parsed.diagnostics[0].message.contains("invalid YAML"));
    }
}
