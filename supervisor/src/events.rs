//! Events: what happened to a namespace's objects, in order.
//!
//! Each event gets the next number of a counter kept in the metadata
//! database and is stored there, in the same transaction, so sequence
//! numbers keep increasing across restarts and a subscriber that reconnects
//! can ask for what it missed. The newest `KEEP` events are kept. Live
//! subscribers get events from an in-memory broadcast.
//!
//! The daemon's own events (of images, containers, tasks) are queued: one
//! writer thread records them in order, as many per transaction as are
//! waiting, so a call does not wait for the disk to report what it did,
//! and a burst of calls costs one sync. What follows from an event being
//! recorded (a task's exit marked as reported) runs after it is. Events
//! queued when the daemon stops are written before it exits; a crash loses
//! at most the few not yet written (a task's exit is then reported again
//! after the restart).
//!
//! A `Subscription` replays: the kept events after the sequence a
//! subscriber saw last, then live ones, each once and in order.

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::metadata::{now, Metadata, MetadataError, Reader, Table};

/// Events kept for subscribers that reconnect.
pub const KEEP: u64 = 10_000;
/// Events a live subscriber may fall behind by before it is cut off.
const LIVE_BUFFER: usize = 1024;
/// The most queued events written in one transaction.
const MAX_BATCH: usize = 256;

/// What runs once a queued event is recorded (true) or failed to be.
pub type AfterRecorded = Box<dyn FnOnce(bool) + Send>;

/// An event waiting for the writer.
struct Queued {
    ns: String,
    topic: String,
    attributes: BTreeMap<String, String>,
    then: Option<AfterRecorded>,
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error(
        "invalid topic {0:?}: want '/' and then 1-255 characters of a-z, 0-9, '/', '-', '_', '.'"
    )]
    InvalidTopic(String),
    #[error("too many attributes ({0}): at most 64, each key and value at most 4096 bytes")]
    TooManyAttributes(usize),
    #[error(
        "the subscriber fell behind after sequence {last}; subscribe again with after_sequence {last}"
    )]
    Lagged { last: u64 },
    #[error("the supervisor is stopping; subscribe again with after_sequence {last}")]
    Stopping { last: u64 },
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

/// Locks a mutex whose data a panic cannot leave inconsistent.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
    /// The writer's queue while it runs.
    queue: Mutex<Option<mpsc::Sender<Queued>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
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
            queue: Mutex::new(None),
            writer: Mutex::new(None),
        }
    }

    /// Starts the writer thread of [`Exchange::enqueue`].
    pub fn start_writer(self: &Arc<Self>) -> std::io::Result<()> {
        let (tx, rx) = mpsc::channel::<Queued>();
        let exchange = Arc::clone(self);
        let handle = std::thread::Builder::new()
            .name("events".into())
            .spawn(move || exchange.write_queued(rx))?;
        *lock(&self.queue) = Some(tx);
        *lock(&self.writer) = Some(handle);
        Ok(())
    }

    /// Writes what is queued until the queue closes.
    fn write_queued(&self, rx: mpsc::Receiver<Queued>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(q) => batch.push(q),
                    Err(_) => break,
                }
            }
            let items: Vec<(&str, &str, &BTreeMap<String, String>)> = batch
                .iter()
                .map(|q| (q.ns.as_str(), q.topic.as_str(), &q.attributes))
                .collect();
            let recorded = match self.publish_many(&items) {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(error = %e, events = batch.len(), "events not recorded");
                    false
                }
            };
            for q in batch {
                if let Some(then) = q.then {
                    then(recorded);
                }
            }
        }
    }

    /// Stops the writer once everything queued is written.
    pub fn stop_writer(&self) {
        lock(&self.queue).take();
        if let Some(handle) = lock(&self.writer).take() {
            let _ = handle.join();
        }
    }

    /// Queues one of the daemon's own events (topic and attributes are
    /// the daemon's, so valid) and returns at once; `then` runs once it is
    /// recorded. Without a writer, it is recorded now.
    pub fn enqueue(
        &self,
        ns: &str,
        topic: &str,
        attributes: BTreeMap<String, String>,
        then: Option<AfterRecorded>,
    ) {
        let queued = Queued {
            ns: ns.to_string(),
            topic: topic.to_string(),
            attributes,
            then,
        };
        let queued = match lock(&self.queue).as_ref() {
            Some(tx) => match tx.send(queued) {
                Ok(()) => return,
                Err(mpsc::SendError(q)) => q,
            },
            None => queued,
        };
        let recorded = match self.publish(&queued.ns, &queued.topic, queued.attributes) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(namespace = ns, topic, error = %e, "event not recorded");
                false
            }
        };
        if let Some(then) = queued.then {
            then(recorded);
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
        let mut events = self.publish_many(&[(ns, topic, &attributes)])?;
        // publish_many returns one event per item.
        events.pop().ok_or(EventError::TooManyAttributes(0))
    }

    /// Records events in one durable transaction, then broadcasts them.
    fn publish_many(
        &self,
        items: &[(&str, &str, &BTreeMap<String, String>)],
    ) -> Result<Vec<Arc<Event>>, EventError> {
        let _order = lock(&self.order);
        let tx = self.meta.write()?;
        let mut events = Vec::with_capacity(items.len());
        for (ns, topic, attributes) in items {
            tx.ensure_namespace(ns)?;
            let sequence = tx.next_id("events")?;
            let event = Event {
                sequence,
                time: now(),
                namespace: ns.to_string(),
                topic: topic.to_string(),
                attributes: (*attributes).clone(),
            };
            tx.put(Table::Events, "", &key(sequence), &event)?;
            if sequence > KEEP {
                tx.delete(Table::Events, "", &key(sequence - KEEP))?;
            }
            events.push(Arc::new(event));
        }
        tx.commit()?;
        for event in &events {
            // No live subscriber is fine.
            let _ = self.live.send(Arc::clone(event));
        }
        Ok(events)
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

impl Exchange {
    /// A subscription to the events of `ns` that pass `filters`: with
    /// `after`, the kept events after that sequence first (blocking: reads
    /// the database), then live ones.
    pub fn subscription(
        &self,
        ns: &str,
        filters: Vec<String>,
        after: Option<u64>,
    ) -> Result<Subscription, EventError> {
        // Live first, so nothing falls between the backlog and the stream.
        let live = self.subscribe();
        let closing = self.closing();
        let backlog = match after {
            Some(after) => self.backlog(ns, after)?,
            None => Vec::new(),
        };
        Ok(Subscription {
            ns: ns.to_string(),
            filters,
            backlog: backlog.into(),
            live,
            closing,
            last: after.unwrap_or(0),
        })
    }
}

/// Stored then live events of one namespace, each once, in order; see
/// [`Exchange::subscription`].
pub struct Subscription {
    ns: String,
    filters: Vec<String>,
    backlog: VecDeque<Event>,
    live: broadcast::Receiver<Arc<Event>>,
    closing: tokio::sync::watch::Receiver<bool>,
    /// The sequence of the last event seen (passed on or filtered out).
    last: u64,
}

impl Subscription {
    /// The next event that passes the filters; `None` when the exchange
    /// is gone; `Lagged` when this subscriber fell too far behind the live
    /// events, `Stopping` when the supervisor stops (both end it: the
    /// subscriber subscribes again after the sequence they name).
    pub async fn next(&mut self) -> Option<Result<Arc<Event>, EventError>> {
        while let Some(e) = self.backlog.pop_front() {
            self.last = e.sequence;
            if topic_matches(&self.filters, &e.topic) {
                return Some(Ok(Arc::new(e)));
            }
        }
        loop {
            tokio::select! {
                got = self.live.recv() => match got {
                    Ok(e) => {
                        if e.sequence <= self.last || e.namespace != self.ns {
                            continue;
                        }
                        self.last = e.sequence;
                        if topic_matches(&self.filters, &e.topic) {
                            return Some(Ok(e));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        return Some(Err(EventError::Lagged { last: self.last }));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.closing.changed() => {
                    return Some(Err(EventError::Stopping { last: self.last }));
                }
            }
        }
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
    fn queued_events_are_written_in_order_then_followed_up() {
        let dir = tempfile::tempdir().unwrap();
        let ex = Arc::new(Exchange::new(Arc::new(
            Metadata::open(&dir.path().join("meta.redb")).unwrap(),
        )));
        ex.start_writer().unwrap();
        let mut live = ex.subscribe();
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for i in 0..300 {
            let done = Arc::clone(&done);
            let attributes = BTreeMap::from([("i".to_string(), i.to_string())]);
            let then: AfterRecorded = Box::new(move |recorded| {
                assert!(recorded);
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
            ex.enqueue("a", "/test/queued", attributes, Some(then));
        }
        // Stopping writes what is queued first.
        ex.stop_writer();
        assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 300);
        let kept: Vec<String> = ex
            .backlog("a", 0)
            .unwrap()
            .into_iter()
            .map(|e| e.attributes["i"].clone())
            .collect();
        assert_eq!(kept, (0..300).map(|i| i.to_string()).collect::<Vec<_>>());
        assert_eq!(live.try_recv().unwrap().attributes["i"], "0");
        // Without a writer, an event is written at once.
        ex.enqueue("a", "/test/late", BTreeMap::new(), None);
        assert_eq!(ex.backlog("a", 300).unwrap().len(), 1);
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

    fn topics(sub: &[Arc<Event>]) -> Vec<(u64, String)> {
        sub.iter().map(|e| (e.sequence, e.topic.clone())).collect()
    }

    #[tokio::test]
    async fn a_subscription_replays_stored_then_live_events_once() {
        let dir = tempfile::tempdir().unwrap();
        let ex = Exchange::new(Arc::new(
            Metadata::open(&dir.path().join("meta.redb")).unwrap(),
        ));
        ex.publish("a", "/images/create", BTreeMap::new()).unwrap();
        ex.publish("a", "/tasks/start", BTreeMap::new()).unwrap();
        ex.publish("b", "/images/create", BTreeMap::new()).unwrap();
        ex.publish("a", "/images/delete", BTreeMap::new()).unwrap();
        let filters = vec!["/images/".to_string()];
        let mut sub = ex.subscription("a", filters, Some(0)).unwrap();
        // Published after subscribing: live, and after the stored ones.
        ex.publish("a", "/images/update", BTreeMap::new()).unwrap();
        ex.publish("b", "/images/update", BTreeMap::new()).unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(sub.next().await.unwrap().unwrap());
        }
        assert_eq!(
            topics(&got),
            [
                (1, "/images/create".to_string()),
                (4, "/images/delete".to_string()),
                (5, "/images/update".to_string())
            ]
        );
        // Without `after`, only what comes next.
        let mut sub = ex.subscription("a", Vec::new(), None).unwrap();
        ex.publish("a", "/x/y", BTreeMap::new()).unwrap();
        assert_eq!(sub.next().await.unwrap().unwrap().sequence, 7);
        // Stopping ends it, naming where to go on.
        ex.close();
        let e = sub.next().await.unwrap().unwrap_err();
        assert!(matches!(e, EventError::Stopping { last: 7 }));
        assert_eq!(
            e.to_string(),
            "the supervisor is stopping; subscribe again with after_sequence 7"
        );
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_where_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let ex = Exchange::new(Arc::new(
            Metadata::open(&dir.path().join("meta.redb")).unwrap(),
        ));
        let mut sub = ex.subscription("a", Vec::new(), None).unwrap();
        let items: Vec<BTreeMap<String, String>> = vec![BTreeMap::new(); LIVE_BUFFER + 10];
        let batch: Vec<(&str, &str, &BTreeMap<String, String>)> =
            items.iter().map(|a| ("a", "/x", a)).collect();
        ex.publish_many(&batch).unwrap();
        assert!(matches!(
            sub.next().await,
            Some(Err(EventError::Lagged { last: 0 }))
        ));
    }
}
