//! Picks a route for a request from one table snapshot. Pure: no I/O, no locks.
//!
//! Order: the exact host's rules, then the single-label wildcard's, then the rules without a
//! host; within each, the longest path wins and Exact beats Prefix at equal length. The first
//! group with a matching path decides. Requests no rule matches go to the default backend.

use std::borrow::Cow;

use crate::table::{BackendId, RouteTable};

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'t> {
    /// The route's bounded name (owning object), for metrics and logs.
    pub route: &'t str,
    pub backend: BackendId,
}

/// Strips the port and a trailing dot from a Host / :authority value and lower-cases it.
pub fn normalize_host(authority: &str) -> Cow<'_, str> {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        // IPv6 literal: keep the brackets, drop the port.
        match rest.split_once(']') {
            Some((inner, _)) => return Cow::Owned(format!("[{}]", inner.to_ascii_lowercase())),
            None => authority,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        }
    };
    let host = host.trim_end_matches('.');
    // Most clients send the name in lower case already: then it is used as it is.
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

impl RouteTable {
    /// Routes a request by its (already normalized) host and its path (without query).
    pub fn route(&self, host: &str, path: &str) -> Option<Decision<'_>> {
        let exact = self.exact_hosts.get(host);
        let wildcard = host
            .split_once('.')
            .and_then(|(_, suffix)| self.wildcard_hosts.get(suffix));
        let found = [exact, wildcard, Some(&self.any_host)]
            .into_iter()
            .flatten()
            .find_map(|group| group.find(path));
        match found {
            Some(route) => Some(Decision {
                route: &route.name,
                backend: route.backend,
            }),
            None => self.default_backend.as_ref().map(|d| Decision {
                route: &d.name,
                backend: d.backend,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Backend, BackendKey, HostMatch, PathMatch, Protocol, RouteTableBuilder};

    fn backend(b: &mut RouteTableBuilder, name: &str) -> BackendId {
        b.backend(Backend {
            key: BackendKey {
                namespace: "ns".into(),
                service: name.into(),
                port: 80,
                protocol: Protocol::Http1,
                tls: None,
            },
            endpoints: vec![],
            unavailable: None,
            policy: Default::default(),
            tls: None,
        })
    }

    fn table() -> RouteTable {
        let mut b = RouteTableBuilder::new();
        let rules: &[(&str, PathMatch, &str)] = &[
            ("foo.com", PathMatch::prefix("/"), "foo-root"),
            ("foo.com", PathMatch::prefix("/api/"), "foo-api"),
            ("foo.com", PathMatch::exact("/api"), "foo-api-exact"),
            ("*.foo.com", PathMatch::prefix("/"), "wild"),
            ("", PathMatch::prefix("/shared"), "any-shared"),
            ("bar.com", PathMatch::exact("/only"), "bar-only"),
        ];
        for (host, path, name) in rules {
            let id = backend(&mut b, name);
            b.route(&HostMatch::parse(host), path.clone(), *name, id)
                .unwrap();
        }
        let d = backend(&mut b, "default");
        b.default_backend("default", d).unwrap();
        b.build()
    }

    #[test]
    fn matching_order() {
        let t = table();
        let cases = [
            ("foo.com", "/", "foo-root"),
            ("foo.com", "/api", "foo-api-exact"),
            ("foo.com", "/api/", "foo-api"),
            ("foo.com", "/api/x", "foo-api"),
            ("foo.com", "/apix", "foo-root"),
            ("a.foo.com", "/x", "wild"),
            ("a.b.foo.com", "/x", "default"),
            ("bar.com", "/only", "bar-only"),
            ("bar.com", "/shared/x", "any-shared"),
            ("bar.com", "/other", "default"),
            ("nothing.example", "/shared", "any-shared"),
        ];
        for (host, path, want) in cases {
            let got = t.route(host, path).map(|d| d.route);
            assert_eq!(got, Some(want), "{host}{path}");
        }
    }

    #[test]
    fn normalizes_hosts() {
        assert_eq!(normalize_host("Foo.COM:8080"), "foo.com");
        assert_eq!(normalize_host("foo.com."), "foo.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("foo.com"), "foo.com");
    }

    #[test]
    fn prefix_is_element_wise() {
        let p = PathMatch::prefix("/aaa/bbb/");
        assert!(p.matches("/aaa/bbb"));
        assert!(p.matches("/aaa/bbb/"));
        assert!(p.matches("/aaa/bbb/ccc"));
        assert!(!p.matches("/aaa/bbbxyz"));
        assert!(!PathMatch::prefix("/aaa/bb").matches("/aaa/bbb"));
        assert!(PathMatch::prefix("/").matches("/anything"));
        assert!(!PathMatch::exact("/foo").matches("/foo/"));
        assert!(!PathMatch::exact("/foo/").matches("/foo"));
    }

    #[test]
    fn duplicate_routes_conflict() {
        let mut b = RouteTableBuilder::new();
        let id = backend(&mut b, "x");
        let host = HostMatch::parse("a.com");
        b.route(&host, PathMatch::prefix("/x/"), "first", id)
            .unwrap();
        let err = b
            .route(&host, PathMatch::prefix("/x"), "second", id)
            .unwrap_err();
        assert_eq!(err.winner, "first");
    }
}
