//! Where each blob of a pull or push stands, for the client's progress bars.

use std::sync::Mutex;

use tokio::sync::Notify;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Waiting,
    Resolving,
    Downloading,
    Uploading,
    Unpacking,
    Exists,
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub digest: String,
    /// "index", "manifest", "config" or "layer".
    pub kind: &'static str,
    pub state: State,
    pub offset: u64,
    pub total: u64,
}

/// Progress of every blob of one transfer, in the order first seen. Writers
/// update it from any thread; the reader wakes on `changed()`.
#[derive(Default)]
pub struct Tracker {
    entries: Mutex<Vec<Progress>>,
    notify: Notify,
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    pub fn set(&self, digest: &str, kind: &'static str, state: State, offset: u64, total: u64) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let p = Progress {
            digest: digest.to_string(),
            kind,
            state,
            offset,
            total,
        };
        match entries.iter_mut().find(|e| e.digest == digest) {
            Some(e) if *e == p => return,
            Some(e) => *e = p,
            None => entries.push(p),
        }
        drop(entries);
        self.notify.notify_one();
    }

    /// Updates the byte count of a blob already tracked.
    pub fn advance(&self, digest: &str, offset: u64) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if let Some(e) = entries.iter_mut().find(|e| e.digest == digest) {
            e.offset = offset;
        }
        drop(entries);
        self.notify.notify_one();
    }

    pub fn state(&self, digest: &str, state: State) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if let Some(e) = entries.iter_mut().find(|e| e.digest == digest) {
            e.state = state;
            if state == State::Done || state == State::Exists {
                e.offset = e.total;
            }
        }
        drop(entries);
        self.notify.notify_one();
    }

    pub fn snapshot(&self) -> Vec<Progress> {
        self.entries.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Resolves when something changed since the last call.
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}
