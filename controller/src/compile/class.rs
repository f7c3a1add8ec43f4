//! Which Ingresses belong to weir: IngressClass `spec.controller`, `ingressClassName`, the legacy
//! `kubernetes.io/ingress.class` annotation, and the default-class annotation.

use std::collections::BTreeSet;

use k8s_openapi::api::networking::v1::Ingress;

use super::CompileOptions;
use crate::index::Index;

pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// The class names weir serves, and whether it serves Ingresses without a class.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Classes {
    names: BTreeSet<String>,
    is_default: bool,
}

impl Classes {
    pub(super) fn new(index: &Index, options: &CompileOptions) -> Self {
        let mut classes = Classes::default();
        let mut foreign = BTreeSet::new();
        for (key, entry) in &index.ingress_classes {
            let ours = entry
                .object
                .spec
                .as_ref()
                .and_then(|s| s.controller.as_deref())
                == Some(options.controller_name.as_str());
            if !ours {
                foreign.insert(key.name.clone());
                continue;
            }
            classes.names.insert(key.name.clone());
            let default = entry
                .object
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true");
            classes.is_default |= default;
        }
        // The configured class name is ours unless an IngressClass gives it to another controller.
        if !foreign.contains(&options.ingress_class) {
            classes.names.insert(options.ingress_class.clone());
        }
        classes
    }

    pub(super) fn owns(&self, ingress: &Ingress) -> bool {
        let class = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref())
            .or_else(|| {
                ingress
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
                    .map(String::as_str)
            });
        match class {
            Some(name) => self.names.contains(name),
            None => self.is_default,
        }
    }
}
