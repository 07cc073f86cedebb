//! Events: what happened to a namespace's objects, in order.
//!
//! Each event gets the next number of a counter kept in the metadata
//! database and is stored there, in the same transaction, so sequence
//! numbers keep increasing across restarts and a subscriber that reconnects
//! can ask for what it missed. The newest `KEEP` events are kept. Live
//! subscribers get events from an in-memory broadcast.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::metadata::{now, Metadata, MetadataError, Reader, Table};

/// Events kept for subscribers that reconnect.
pub const KEEP: u64 = 10_000;
/// Events a live subscriber may fall behind by before it is cut off.
const LIVE_BUFFER: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error(
        "invalid topic {0:?}: want '/' and then 1-255 characters of a-z, 0-9, '/', '-', '_', '.'"
    )]
    InvalidTopic(String),
    #[error("too many attributes ({0}): at most 64, each key and value at most 4096 bytes")]
    TooManyAttributes(usize),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub sequence: u64,
    /// Nanoseconds since the epoch.
    pub time: u64,
    pub namespace: String,
    pub topic: String,
    pub attributes: BTreeMap<String, String>,
}

pub fn validate_topic(topic: &str) -> Result<(), EventError> {
    let ok = topic.len() >= 2
        && topic.len() <= 256
        && topic.starts_with('/')
        && topic
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"/-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(EventError::InvalidTopic(topic.to_string()))
    }
}

/// Whether `topic` passes `filters`: equal to one, or starting with one
/// that ends in '/'. No filters pass everything.
pub fn topic_matches(filters: &[String], topic: &str) -> bool {
    filters.is_empty()
        || filters
            .iter()
            .any(|f| f == topic || (f.ends_with('/') && topic.starts_with(f.as_str())))
}

fn key(sequence: u64) -> String {
    format!("{sequence:020}")
}

pub struct Exchange {
    meta: Arc<Metadata>,
    live: broadcast::Sender<Arc<Event>>,
    /// True once the supervisor is stopping: subscriptions end.
    closing: tokio::sync::watch::Sender<bool>,
    /// Publishing is numbered and broadcast in one order.
    order: Mutex<()>,
}

impl Exchange {
    pub fn new(meta: Arc<Metadata>) -> Exchange {
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        let (closing, _) = tokio::sync::watch::channel(false);
        Exchange {
            meta,
            live,
            closing,
            order: Mutex::new(()),
        }
    }

    /// Records and broadcasts an event (blocking: one durable transaction).
    pub fn publish(
        &self,
        ns: &str,
        topic: &str,
        attributes: BTreeMap<String, String>,
    ) -> Result<Arc<Event>, EventError> {
        validate_topic(topic)?;
        if attributes.len() > 64
            || attributes
                .iter()
                .any(|(k, v)| k.len() > 4096 || v.len() > 4096)
        {
            return Err(EventError::TooManyAttributes(attributes.len()));
        }
        let _order = self.order.lock().unwrap_or_else(|e| e.into_inner());
        let tx = self.meta.write()?;
        tx.ensure_namespace(ns)?;
        let sequence = tx.next_id("events")?;
        let event = Event {
            sequence,
            time: now(),
            namespace: ns.to_string(),
            topic: topic.to_string(),
            attributes,
        };
        tx.put(Table::Events, "", &key(sequence), &event)?;
        if sequence > KEEP {
            tx.delete(Table::Events, "", &key(sequence - KEEP))?;
        }
        tx.commit()?;
        let event = Arc::new(event);
        // No live subscriber is fine.
        let _ = self.live.send(Arc::clone(&event));
        Ok(event)
    }

    /// `publish` off the async threads. An event that cannot be recorded
    /// is logged: the change it reports on has happened either way.
    pub async fn publish_async(
        self: &Arc<Self>,
        ns: &str,
        topic: &str,
        attributes: BTreeMap<String, String>,
    ) {
        let events = Arc::clone(self);
        let (ns2, topic2) = (ns.to_string(), topic.to_string());
        let done =
            tokio::task::spawn_blocking(move || events.publish(&ns2, &topic2, attributes)).await;
        let error = match done {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(namespace = ns, topic, error, "event not recorded");
    }

    /// Live events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.live.subscribe()
    }

    /// Ends every subscription (the supervisor is stopping: a subscriber
    /// would otherwise hold the shutdown up).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Changes to true when `close` is called.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// The kept events of `ns` after `after`, oldest first.
    pub fn backlog(&self, ns: &str, after: u64) -> Result<Vec<Event>, EventError> {
        let rx = self.meta.read()?;
        Ok(rx
            .list::<Event>(Table::Events, "")?
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e| e.sequence > after && e.namespace == ns)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_numbered_kept_and_replayed_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let ex = Exchange::new(Arc::new(Metadata::open(&path).unwrap()));
            let mut live = ex.subscribe();
            let a = ex.publish("a", "/images/create", BTreeMap::new()).unwrap();
            ex.publish("b", "/images/create", BTreeMap::new()).unwrap();
            assert_eq!(live.try_recv().unwrap().sequence, a.sequence);
            assert!(ex.publish("a", "images", BTreeMap::new()).is_err());
            assert!(ex.publish("a", "/Images", BTreeMap::new()).is_err());
        }
        let ex = Exchange::new(Arc::new(Metadata::open(&path).unwrap()));
        let c = ex.publish("a", "/images/delete", BTreeMap::new()).unwrap();
        assert_eq!(c.sequence, 3);
        let all: Vec<u64> = ex
            .backlog("a", 0)
            .unwrap()
            .iter()
            .map(|e| e.sequence)
            .collect();
        assert_eq!(all, vec![1, 3]);
        assert_eq!(ex.backlog("a", 1).unwrap().len(), 1);
    }

    #[test]
    fn filters_match_topics_and_prefixes() {
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(topic_matches(&[], "/x"));
        assert!(topic_matches(&f(&["/images/"]), "/images/create"));
        assert!(topic_matches(&f(&["/images/create"]), "/images/create"));
        assert!(!topic_matches(&f(&["/images"]), "/images/create"));
        assert!(!topic_matches(&f(&["/tasks/"]), "/images/create"));
    }
}
