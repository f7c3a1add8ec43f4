//! Settles the Ingresses' claims into one table, in conflict order: the first claim on a host
//! and path, a certificate name or the default backend wins, and the others are recorded as lost
//! in their fragments.
//!
//! The linker lives from one compile to the next. It knows who claims each host, certificate
//! name, the default backend and each backend, so a change settles again only what the changed
//! Ingresses claim (before and after): an edit of one Ingress among 10,000 touches its own host
//! and backend, and the table keeps sharing everything else with the one before.

use foldhash::{HashMap, HashSet};
use std::collections::BTreeMap;
use weir_dataplane::{
    BackendId, BackendKey, Conflict, DefaultBackend, HostMatch, HostRoutes, Route, RouteTable,
    RouteTableBuilder, TlsCertificate,
};

use super::fragment::{Fragment, Step};
use super::set::Set;
use super::Order;

/// Each fragment, in conflict order.
pub(super) type Fragments = BTreeMap<Order, Fragment>;

#[derive(Default)]
pub(super) struct Linker {
    builder: RouteTableBuilder,
    /// Who claims routes on each host.
    hosts: HashMap<HostMatch, Set<Order>>,
    /// Who claims a certificate for each name.
    certificates: HashMap<HostMatch, Set<Order>>,
    /// Who claims the default backend.
    defaults: Set<Order>,
    /// Each backend's slot and who uses it (losing routes too: a backend is in the table once
    /// any Ingress names it).
    backends: HashMap<BackendKey, Users>,
    /// Whether the table changed since the last [`table`](Self::table).
    changed: bool,
    /// What claims changed since the last [`settle`](Self::settle).
    touched: Option<Touched>,
}

struct Users {
    id: BackendId,
    by: Set<Order>,
}

/// What changed claims, collected before settling them again.
#[derive(Default)]
struct Touched {
    hosts: HashSet<HostMatch>,
    certificates: HashSet<HostMatch>,
    default: bool,
    backends: HashSet<BackendKey>,
}

impl Linker {
    /// Withdraws the claims of `fragment`, which is no longer in the fragments.
    pub(super) fn remove(&mut self, order: &Order, fragment: &Fragment) {
        self.claims(order, fragment, false);
    }

    /// Makes the claims of the fragment at `order`, which is in the fragments.
    pub(super) fn add(&mut self, order: &Order, fragment: &Fragment) {
        self.claims(order, fragment, true);
    }

    fn claims(&mut self, order: &Order, fragment: &Fragment, add: bool) {
        fn set<K: std::hash::Hash + Eq + Clone>(
            map: &mut HashMap<K, Set<Order>>,
            key: &K,
            order: &Order,
            add: bool,
        ) {
            if add {
                map.entry(key.clone()).or_default().insert(order.clone());
            } else if let Some(claims) = map.get_mut(key) {
                claims.remove(order);
                if claims.is_empty() {
                    map.remove(key);
                }
            }
        }
        let touched = self.touched.get_or_insert_with(Default::default);
        for step in &fragment.steps {
            let backend = match step {
                Step::Report(_) => None,
                Step::DefaultBackend { backend } => {
                    if add {
                        self.defaults.insert(order.clone());
                    } else {
                        self.defaults.remove(order);
                    }
                    touched.default = true;
                    Some(backend)
                }
                Step::Route { host, backend, .. } => {
                    set(&mut self.hosts, host, order, add);
                    touched.hosts.insert(host.clone());
                    Some(backend)
                }
                Step::Certificate { name, .. } => {
                    if *name != HostMatch::Any {
                        set(&mut self.certificates, name, order, add);
                        touched.certificates.insert(name.clone());
                    }
                    None
                }
            };
            if let Some(backend) = backend {
                let key = &backend.key;
                if add {
                    match self.backends.get_mut(key) {
                        Some(users) => {
                            users.by.insert(order.clone());
                        }
                        None => {
                            let id = self.builder.add_backend(backend.clone());
                            self.changed = true;
                            self.backends.insert(
                                key.clone(),
                                Users {
                                    id,
                                    by: Set::one(order.clone()),
                                },
                            );
                        }
                    }
                } else if let Some(users) = self.backends.get_mut(key) {
                    users.by.remove(order);
                }
                touched.backends.insert(key.clone());
            }
        }
    }

    /// Settles again everything the claims added and removed since the last call touched.
    /// Records lost claims in the fragments.
    pub(super) fn settle(&mut self, fragments: &mut Fragments) {
        let Some(touched) = self.touched.take() else {
            return;
        };
        for key in &touched.backends {
            self.settle_backend(key, fragments);
        }
        for host in &touched.hosts {
            self.settle_host(host, fragments);
        }
        for name in &touched.certificates {
            self.settle_certificate(name, fragments);
        }
        if touched.default {
            self.settle_default(fragments);
        }
    }

    /// The backend a key stands for: the first user's (in conflict order).
    fn settle_backend(&mut self, key: &BackendKey, fragments: &Fragments) {
        let Some(users) = self.backends.get(key) else {
            return;
        };
        let first = users.by.first().and_then(|order| {
            fragments
                .get(order)?
                .steps
                .iter()
                .find_map(|step| match step {
                    Step::Route { backend, .. } | Step::DefaultBackend { backend }
                        if backend.key == *key =>
                    {
                        Some(backend.clone())
                    }
                    _ => None,
                })
        });
        let id = users.id;
        match first {
            Some(backend) => self.changed |= self.builder.replace_backend(id, backend),
            None => {
                self.builder.remove_backend(id);
                self.backends.remove(key);
                self.changed = true;
            }
        }
    }

    fn settle_host(&mut self, host: &HostMatch, fragments: &mut Fragments) {
        let mut routes: Vec<Route> = Vec::new();
        let claims: Vec<Order> = self
            .hosts
            .get(host)
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default();
        for order in &claims {
            let Some(fragment) = fragments.get_mut(order) else {
                continue;
            };
            for (i, step) in fragment.steps.iter().enumerate() {
                let Step::Route {
                    host: h,
                    matcher,
                    backend,
                    ..
                } = step
                else {
                    continue;
                };
                if h != host {
                    continue;
                }
                // Every backend named by a fragment in the linker has a slot.
                let Some(users) = self.backends.get(&backend.key) else {
                    continue;
                };
                fragment.lost[i] = match routes.iter().find(|r| r.path == *matcher) {
                    Some(winner) => Some(Conflict::route(host, matcher, &winner.name)),
                    None => {
                        routes.push(Route {
                            name: fragment.name.clone(),
                            path: matcher.clone(),
                            backend: users.id,
                        });
                        None
                    }
                };
            }
        }
        self.changed |= self.builder.set_routes(host, HostRoutes::new(routes));
    }

    fn settle_certificate(&mut self, name: &HostMatch, fragments: &mut Fragments) {
        let claims: Vec<Order> = self
            .certificates
            .get(name)
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default();
        let mut winner: Option<TlsCertificate> = None;
        for order in &claims {
            let Some(fragment) = fragments.get_mut(order) else {
                continue;
            };
            for (i, step) in fragment.steps.iter().enumerate() {
                let Step::Certificate { name: n, cert, .. } = step else {
                    continue;
                };
                if n != name {
                    continue;
                }
                fragment.lost[i] = match &winner {
                    Some(w) => Some(Conflict::certificate(name, w.source())),
                    None => {
                        winner = Some(cert.clone());
                        None
                    }
                };
            }
        }
        self.changed |= self.builder.set_certificate(name, winner);
    }

    fn settle_default(&mut self, fragments: &mut Fragments) {
        let claims: Vec<Order> = self.defaults.iter().cloned().collect();
        let mut winner: Option<DefaultBackend> = None;
        for order in &claims {
            let Some(fragment) = fragments.get_mut(order) else {
                continue;
            };
            for (i, step) in fragment.steps.iter().enumerate() {
                let Step::DefaultBackend { backend } = step else {
                    continue;
                };
                let Some(users) = self.backends.get(&backend.key) else {
                    continue;
                };
                fragment.lost[i] = match &winner {
                    Some(w) => Some(Conflict::default_backend(&w.name)),
                    None => {
                        winner = Some(DefaultBackend {
                            name: fragment.name.clone(),
                            backend: users.id,
                        });
                        None
                    }
                };
            }
        }
        self.changed |= self.builder.set_default_backend(winner);
    }

    pub(super) fn default_certificate(&mut self, cert: Option<TlsCertificate>) {
        self.changed |= self.builder.set_default_certificate(cert);
    }

    /// The table as settled, and whether it changed since the last one.
    pub(super) fn table(&mut self) -> (RouteTable, bool) {
        let changed = std::mem::take(&mut self.changed);
        (self.builder.table(), changed)
    }
}
