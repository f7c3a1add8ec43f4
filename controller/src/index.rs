//! The object index: every object weir reads, by kind and namespace/name. Sources write it;
//! `compile` reads it.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use crate::crd::BackendPolicy;
use crate::object::{Kind, Object, ObjectKey, ObjectRef, Origin};

/// An object and where it came from. The object is shared with the source that read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry<T> {
    pub object: Arc<T>,
    pub origin: Option<Origin>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Index {
    pub ingresses: BTreeMap<ObjectKey, Entry<Ingress>>,
    pub ingress_classes: BTreeMap<ObjectKey, Entry<IngressClass>>,
    pub services: BTreeMap<ObjectKey, Entry<Service>>,
    pub endpoint_slices: BTreeMap<ObjectKey, Entry<EndpointSlice>>,
    pub secrets: BTreeMap<ObjectKey, Entry<Secret>>,
    pub config_maps: BTreeMap<ObjectKey, Entry<ConfigMap>>,
    pub backend_policies: BTreeMap<ObjectKey, Entry<BackendPolicy>>,
}

impl Index {
    /// Inserts or replaces an object.
    pub fn apply(&mut self, object: Object, origin: Option<Origin>) {
        let key = object.object_ref().key;
        fn put<T>(
            map: &mut BTreeMap<ObjectKey, Entry<T>>,
            key: ObjectKey,
            object: Arc<T>,
            origin: Option<Origin>,
        ) {
            map.insert(key, Entry { object, origin });
        }
        match object {
            Object::Ingress(o) => put(&mut self.ingresses, key, o, origin),
            Object::IngressClass(o) => put(&mut self.ingress_classes, key, o, origin),
            Object::Service(o) => put(&mut self.services, key, o, origin),
            Object::EndpointSlice(o) => put(&mut self.endpoint_slices, key, o, origin),
            Object::Secret(o) => put(&mut self.secrets, key, o, origin),
            Object::ConfigMap(o) => put(&mut self.config_maps, key, o, origin),
            Object::BackendPolicy(o) => put(&mut self.backend_policies, key, o, origin),
        }
    }

    /// Removes an object; returns whether it was there.
    pub fn delete(&mut self, kind: Kind, key: &ObjectKey) -> bool {
        match kind {
            Kind::Ingress => self.ingresses.remove(key).is_some(),
            Kind::IngressClass => self.ingress_classes.remove(key).is_some(),
            Kind::Service => self.services.remove(key).is_some(),
            Kind::EndpointSlice => self.endpoint_slices.remove(key).is_some(),
            Kind::Secret => self.secrets.remove(key).is_some(),
            Kind::ConfigMap => self.config_maps.remove(key).is_some(),
            Kind::BackendPolicy => self.backend_policies.remove(key).is_some(),
        }
    }

    /// Where the object was read from, if it is here and its source said.
    pub fn origin(&self, object: &ObjectRef) -> Option<&Origin> {
        let key = &object.key;
        match object.kind {
            Kind::Ingress => self.ingresses.get(key)?.origin.as_ref(),
            Kind::IngressClass => self.ingress_classes.get(key)?.origin.as_ref(),
            Kind::Service => self.services.get(key)?.origin.as_ref(),
            Kind::EndpointSlice => self.endpoint_slices.get(key)?.origin.as_ref(),
            Kind::Secret => self.secrets.get(key)?.origin.as_ref(),
            Kind::ConfigMap => self.config_maps.get(key)?.origin.as_ref(),
            Kind::BackendPolicy => self.backend_policies.get(key)?.origin.as_ref(),
        }
    }

    /// The keys of every object of `kind`.
    pub fn keys(&self, kind: Kind) -> Vec<ObjectKey> {
        match kind {
            Kind::Ingress => self.ingresses.keys().cloned().collect(),
            Kind::IngressClass => self.ingress_classes.keys().cloned().collect(),
            Kind::Service => self.services.keys().cloned().collect(),
            Kind::EndpointSlice => self.endpoint_slices.keys().cloned().collect(),
            Kind::Secret => self.secrets.keys().cloned().collect(),
            Kind::ConfigMap => self.config_maps.keys().cloned().collect(),
            Kind::BackendPolicy => self.backend_policies.keys().cloned().collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.ingresses.len()
            + self.ingress_classes.len()
            + self.services.len()
            + self.endpoint_slices.len()
            + self.secrets.len()
            + self.config_maps.len()
            + self.backend_policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
