//! The pool of ONNX Runtime sessions an [`OnnxField`](super::OnnxField)
//! spreads its calls over.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use ort::session::Session;

/// Sessions of one model behind mutexes: a call takes a free one, or waits
/// for one when all are busy. Calls rotate over the pool so that concurrent
/// callers start on different sessions.
pub(super) struct SessionPool {
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
}

impl SessionPool {
    /// A pool of the given sessions (a field fills it with at least one
    /// before its first call).
    pub(super) fn new(sessions: Vec<Session>) -> SessionPool {
        SessionPool {
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// How many sessions the pool holds.
    pub(super) fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Takes a free session from the pool, or waits for one.
    pub(super) fn take(&self) -> MutexGuard<'_, Session> {
        let n = self.sessions.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        for k in 0..n {
            match self.sessions[(start + k) % n].try_lock() {
                Ok(guard) => return guard,
                // A panic elsewhere while running does not corrupt a session.
                Err(TryLockError::Poisoned(e)) => return e.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        self.sessions[start]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}
