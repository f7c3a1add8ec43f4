//! What a client connection's task shares with the request handlers and bodies it drives:
//! which streams' response bodies woke, which request bodies want flow-control credit sent,
//! and the task's waker. Everything else about the connection lives in the task alone.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Wake, Waker};

use futures_util::task::AtomicWaker;

#[derive(Default)]
pub(super) struct Events {
    /// Streams whose response body may have something to send.
    pub(super) ready: Vec<u32>,
    /// Streams whose request body consumed enough to send a WINDOW_UPDATE.
    pub(super) release: Vec<u32>,
}

#[derive(Default)]
pub(super) struct Shared {
    events: Mutex<Events>,
    /// Request body bytes consumed on all streams, not yet credited to the connection.
    pub(super) credit: AtomicU32,
    task: AtomicWaker,
}

impl Shared {
    pub(super) fn events(&self) -> MutexGuard<'_, Events> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn register(&self, waker: &Waker) {
        self.task.register(waker);
    }

    pub(super) fn wake_task(&self) {
        self.task.wake();
    }

    pub(super) fn ask_release(&self, id: u32) {
        self.events().release.push(id);
        self.wake_task();
    }

    /// Adds consumed bytes to the connection credit; wakes the task when a batch is due.
    pub(super) fn credit(&self, n: u32, batch: u32) {
        let before = self.credit.fetch_add(n, Ordering::AcqRel);
        if before < batch && before + n >= batch {
            self.wake_task();
        }
    }
}

/// The waker a stream's response body is polled with: it queues the stream and wakes the task.
pub(super) struct StreamWaker {
    pub(super) id: u32,
    pub(super) shared: Arc<Shared>,
}

impl Wake for StreamWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.events().ready.push(self.id);
        self.shared.wake_task();
    }
}
