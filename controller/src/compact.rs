//! Trims objects as they enter the index: what weir never reads is dropped, and vectors give
//! back the spare capacity deserialization left them. serde grows a `Vec` by doubling from
//! four, so a one-endpoint EndpointSlice held room for four 352-byte endpoints; at 10,000
//! Ingresses (with their Services and EndpointSlices) the index was 24 MiB larger than its
//! contents (heaptrack, `bench/cluster_scale.py`).

use k8s_openapi::api::core::v1::{LoadBalancerStatus, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

fn vec<T>(v: &mut Vec<T>) {
    v.shrink_to_fit();
}

fn opt_vec<T>(v: &mut Option<Vec<T>>) {
    if let Some(v) = v {
        v.shrink_to_fit();
    }
}

fn strings(v: &mut Option<Vec<String>>) {
    if let Some(v) = v {
        v.shrink_to_fit();
        v.iter_mut().for_each(String::shrink_to_fit);
    }
}

/// Every kind's metadata, which both sources trim as objects arrive: managedFields (server-side
/// apply bookkeeping, often larger than the object) is never read.
pub fn metadata(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    opt_vec(&mut meta.owner_references);
    strings(&mut meta.finalizers);
}

/// The rules of an Ingress (its metadata is trimmed by [`metadata`], as for every kind).
pub fn ingress(mut o: Ingress) -> Ingress {
    if let Some(spec) = o.spec.as_mut() {
        if let Some(rules) = spec.rules.as_mut() {
            vec(rules);
            for rule in rules {
                if let Some(http) = rule.http.as_mut() {
                    vec(&mut http.paths);
                }
            }
        }
        if let Some(tls) = spec.tls.as_mut() {
            vec(tls);
            for t in tls {
                strings(&mut t.hosts);
            }
        }
    }
    if let Some(IngressLoadBalancerStatus { ingress: Some(lb) }) =
        o.status.as_mut().and_then(|s| s.load_balancer.as_mut())
    {
        vec(lb);
        lb.iter_mut().for_each(|i| opt_vec(&mut i.ports));
    }
    o
}

pub fn service(mut o: Service) -> Service {
    if let Some(spec) = o.spec.as_mut() {
        opt_vec(&mut spec.ports);
        strings(&mut spec.cluster_ips);
        strings(&mut spec.ip_families);
        strings(&mut spec.external_ips);
        strings(&mut spec.load_balancer_source_ranges);
    }
    if let Some(status) = o.status.as_mut() {
        opt_vec(&mut status.conditions);
        if let Some(LoadBalancerStatus { ingress: Some(lb) }) = status.load_balancer.as_mut() {
            vec(lb);
            lb.iter_mut().for_each(|i| opt_vec(&mut i.ports));
        }
    }
    o
}

pub fn endpoint_slice(mut o: EndpointSlice) -> EndpointSlice {
    vec(&mut o.endpoints);
    for endpoint in &mut o.endpoints {
        vec(&mut endpoint.addresses);
        endpoint
            .addresses
            .iter_mut()
            .for_each(String::shrink_to_fit);
        if let Some(hints) = endpoint.hints.as_mut() {
            opt_vec(&mut hints.for_zones);
        }
    }
    opt_vec(&mut o.ports);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_slices_keep_their_contents_and_lose_the_slack() {
        let yaml = r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: shop
  managedFields: [{manager: kube-controller-manager, operation: Update}]
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: ["198.18.0.1"]
  conditions: {ready: true}
"#;
        let mut parsed: EndpointSlice = serde_yaml::from_str(yaml).unwrap();
        assert!(
            parsed.endpoints.capacity() > 1,
            "serde left no slack to test"
        );
        let mut expected = parsed.clone();
        expected.metadata.managed_fields = None;
        metadata(&mut parsed.metadata);
        let compacted = endpoint_slice(parsed);
        assert_eq!(compacted, expected);
        assert_eq!(compacted.endpoints.capacity(), 1);
        assert_eq!(compacted.endpoints[0].addresses.capacity(), 1);
    }

    #[test]
    fn ingresses_keep_their_rules() {
        let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: shop}
spec:
  tls: [{hosts: [shop.example], secretName: shop-tls}]
  rules:
  - host: shop.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#;
        let parsed: Ingress = serde_yaml::from_str(yaml).unwrap();
        let compacted = ingress(parsed.clone());
        assert_eq!(compacted, parsed);
        let rules = compacted.spec.as_ref().unwrap().rules.as_ref().unwrap();
        assert_eq!(rules.capacity(), 1);
        assert_eq!(rules[0].http.as_ref().unwrap().paths.capacity(), 1);
    }
}
