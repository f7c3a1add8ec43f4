//! The dataplane's view of configuration: the current [`Snapshot`] behind one atomic pointer.
//!
//! Tables arrive whole on a watch channel. Applying one resolves each backend to its pool (pools
//! live outside tables, keyed by backend identity, so warm connections survive updates), then
//! swaps the snapshot. A request loads the snapshot once and uses it to the end.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use foldhash::{HashMap, HashSet};
use prometheus::Registry;
use tokio::sync::watch;

use crate::metrics::ProxyMetrics;
use crate::proxy::AccessLog;
use crate::session::Session;
use crate::table::{BackendId, BackendKey, RouteTable};
use crate::upstream::{BackendPool, Sweeper};

/// One table plus the pool for each of its backends (same indexes as the table's backends).
#[derive(Debug)]
pub struct Snapshot {
    pub table: Arc<RouteTable>,
    pools: Vec<Option<Arc<BackendPool>>>,
}

impl Snapshot {
    /// The pool of backend `id`; none if the table has no such backend (the builder never
    /// lets a route name one).
    pub(crate) fn pool(&self, id: BackendId) -> Option<&Arc<BackendPool>> {
        self.pools.get(id.index())?.as_ref()
    }
}

/// Shared state of one dataplane: the current snapshot, the pools, metrics and readiness.
#[derive(Debug)]
pub struct Dataplane {
    pub(crate) current: Arc<ArcSwap<Snapshot>>,
    pools: Mutex<HashMap<BackendKey, Arc<BackendPool>>>,
    sweeper: Arc<Sweeper>,
    pub(crate) metrics: ProxyMetrics,
    pub(crate) registry: Registry,
    pub(crate) access_log: Option<AccessLog>,
    sessions: AtomicU64,
    ready: AtomicBool,
    draining: AtomicBool,
}

/// Dataplane options that are not part of the route table.
#[derive(Debug, Default)]
pub struct Options {
    /// Write one JSON line per request to stdout.
    pub access_log: bool,
}

impl Dataplane {
    /// Must be called inside a Tokio runtime (the access log and the pool sweeper are tasks).
    pub fn new(registry: Registry, options: Options) -> prometheus::Result<Arc<Self>> {
        let metrics = ProxyMetrics::register(&registry)?;
        let access_log = if options.access_log {
            Some(AccessLog::stdout(&registry)?)
        } else {
            None
        };
        let empty = Snapshot {
            table: Arc::new(RouteTable::default()),
            pools: Vec::new(),
        };
        Ok(Arc::new(Self {
            current: Arc::new(ArcSwap::from_pointee(empty)),
            pools: Mutex::new(HashMap::default()),
            sweeper: Sweeper::start(),
            metrics,
            registry,
            access_log,
            sessions: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        }))
    }

    /// The snapshot requests are served from right now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Serves `table` from now on. Backends it keeps keep their pools; endpoint changes are
    /// applied to those pools in place; pools of backends it drops are released once their
    /// in-flight requests finish.
    pub fn apply(&self, table: Arc<RouteTable>) {
        let started = std::time::Instant::now();
        let old = self.current.load_full();
        let old_slots = old.table.backend_slots();
        let mut registry = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        // A slot holding the very backend the serving table holds there keeps its pool as it
        // is: with 10,000 backends, an update that changes one of them looks up one pool, on the
        // thread that serves traffic.
        let mut replaced: Vec<&BackendKey> = Vec::new();
        let mut placed: HashSet<&BackendKey> = HashSet::default();
        let slots = table.backend_slots();
        let mut pools = Vec::with_capacity(slots.len());
        for (i, slot) in slots.iter().enumerate() {
            let before = old_slots.get(i).and_then(Option::as_ref);
            let same = matches!((slot, before), (Some(a), Some(b)) if Arc::ptr_eq(a, b));
            if same {
                pools.push(old.pools.get(i).cloned().flatten());
                continue;
            }
            if let Some(before) = before {
                replaced.push(&before.key);
            }
            let Some(backend) = slot else {
                pools.push(None);
                continue;
            };
            placed.insert(&backend.key);
            let pool = match registry.get(&backend.key) {
                Some(pool) => pool.clone(),
                None => {
                    let pool = BackendPool::new(
                        backend.key.clone(),
                        backend.policy.clone(),
                        backend.tls.clone(),
                        &self.metrics,
                        &self.sweeper,
                    );
                    registry.insert(backend.key.clone(), pool.clone());
                    pool
                }
            };
            pool.update(
                &backend.endpoints,
                backend.unavailable.as_deref(),
                &backend.policy,
            );
            pools.push(Some(pool));
        }
        replaced.extend(old_slots.iter().skip(slots.len()).flatten().map(|b| &b.key));
        // A table holds one backend per key, so a key that left its slot is still served only
        // if it was placed in another one.
        for key in replaced {
            if !placed.contains(key) && registry.remove(key).is_some() {
                tracing::debug!(backend = %key, "backend removed; its pool drains");
            }
        }
        drop(registry);
        tracing::info!(
            generation = table.generation,
            routes = table.route_count(),
            backends = pools.iter().flatten().count(),
            apply_ms = started.elapsed().as_secs_f64() * 1e3,
            "route table applied"
        );
        self.current.store(Arc::new(Snapshot { table, pools }));
        self.ready.store(true, Ordering::Release);
    }

    /// Applies every table published on `tables` until the sender is dropped.
    pub async fn follow(self: Arc<Self>, mut tables: watch::Receiver<Option<Arc<RouteTable>>>) {
        loop {
            let table = tables.borrow_and_update().clone();
            if let Some(table) = table {
                self.apply(table);
            }
            if tables.changed().await.is_err() {
                return;
            }
        }
    }

    /// True once the first table has been applied and until draining starts.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    /// A new client connection.
    pub(crate) fn session(&self) -> Arc<Session> {
        Arc::new(Session::new(self.sessions.fetch_add(1, Ordering::Relaxed)))
    }

    /// Every pool of the current table, as JSON.
    pub fn debug_pools(&self) -> serde_json::Value {
        let snapshot = self.snapshot();
        serde_json::Value::Array(snapshot.pools.iter().flatten().map(|p| p.debug()).collect())
    }

    /// The pool serving `key` right now, if the current table has that backend.
    pub fn pool(&self, key: &BackendKey) -> Option<Arc<BackendPool>> {
        let snapshot = self.snapshot();
        let (id, _) = snapshot.table.backends().find(|(_, b)| &b.key == key)?;
        snapshot.pool(id).cloned()
    }

    /// True once draining has started: connections close instead of taking more requests.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}
