//! A client connection as the upstream pools see it: an identity for connection ownership
//! (`never` mode, the first-request rule) and a request counter.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct Session {
    id: u64,
    requests: AtomicU64,
}

impl Session {
    pub(crate) fn new(id: u64) -> Self {
        Self {
            id,
            requests: AtomicU64::new(0),
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Counts a request; true for the connection's first.
    pub(crate) fn begin_request(&self) -> bool {
        self.requests.fetch_add(1, Ordering::AcqRel) == 0
    }
}
