//! Docker's events (`/events`, `docker events`): what happened to
//! containers, images, volumes and networks, as the engine saw it. The
//! newest [`KEEP`] are kept in memory for `since`; subscribers get new ones
//! as they are emitted.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

/// How many past events are kept for `since`.
pub const KEEP: usize = 1024;

/// The object an event is about (Docker's event `Type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Container,
    Image,
    Volume,
    Network,
    Daemon,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Container => "container",
            Kind::Image => "image",
            Kind::Volume => "volume",
            Kind::Network => "network",
            Kind::Daemon => "daemon",
        }
    }
}

/// One event, serialized as Docker's `/events` stream writes it.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    #[serde(rename = "Type")]
    pub kind: Kind,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    pub scope: &'static str,
    pub time: i64,
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
    // The fields of API versions before 1.22, which clients still read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

/// The engine's event log and broadcast.
pub struct Events {
    kept: Mutex<VecDeque<Event>>,
    tx: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

impl Events {
    pub fn new() -> Events {
        let (tx, _) = broadcast::channel(KEEP);
        Events {
            kept: Mutex::new(VecDeque::with_capacity(64)),
            tx,
        }
    }

    /// Records and broadcasts an event about `id`.
    pub fn emit(&self, kind: Kind, action: &str, id: &str, attributes: BTreeMap<String, String>) {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let (status, old_id, from) = match kind {
            Kind::Container | Kind::Image => (
                Some(action.to_string()),
                Some(id.to_string()),
                attributes.get("image").cloned(),
            ),
            _ => (None, None, None),
        };
        let event = Event {
            kind,
            action: action.to_string(),
            actor: Actor {
                id: id.to_string(),
                attributes,
            },
            scope: "local",
            time: nanos / 1_000_000_000,
            time_nano: nanos,
            status,
            id: old_id,
            from,
        };
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() == KEEP {
            kept.pop_front();
        }
        kept.push_back(event.clone());
        // Sent under the lock, so a subscriber that read the kept events
        // under it sees every later one exactly once.
        let _ = self.tx.send(event);
    }

    /// The kept events, then a receiver of the ones after them.
    pub fn subscribe(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        (kept.iter().cloned().collect(), self.tx.subscribe())
    }
}

/// `docker events --filter`: each key's values are alternatives, all keys
/// must match.
pub fn matches(
    event: &Event,
    filters: &BTreeMap<String, std::collections::BTreeSet<String>>,
) -> bool {
    let attr = |k: &str| event.actor.attributes.get(k).map(String::as_str);
    filters.iter().all(|(key, values)| {
        values.iter().any(|v| match key.as_str() {
            "type" => event.kind.name() == v,
            // `exec_start: sh` is the event `exec_start`.
            "event" => event.action == *v || event.action.split(':').next() == Some(v.as_str()),
            "container" => {
                event.kind == Kind::Container
                    && (event.actor.id.starts_with(v.as_str()) || attr("name") == Some(v.as_str()))
            }
            "image" => {
                attr("image") == Some(v.as_str())
                    || (event.kind == Kind::Image
                        && (event.actor.id == *v || attr("name") == Some(v.as_str())))
            }
            "volume" => event.kind == Kind::Volume && event.actor.id == *v,
            "network" => {
                event.kind == Kind::Network
                    && (event.actor.id == *v || attr("name") == Some(v.as_str()))
            }
            "daemon" => event.kind == Kind::Daemon,
            "label" => match v.split_once('=') {
                Some((k, want)) => attr(k) == Some(want),
                None => attr(v).is_some(),
            },
            "scope" => v == "local",
            _ => false,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_then_new() {
        let events = Events::new();
        events.emit(Kind::Container, "create", "a", BTreeMap::new());
        let (kept, mut rx) = events.subscribe();
        assert_eq!(kept.len(), 1);
        events.emit(Kind::Container, "start", "a", BTreeMap::new());
        let next = rx.try_recv().unwrap();
        assert_eq!(next.action, "start");
        let json = serde_json::to_value(&next).unwrap();
        assert_eq!(json["Type"], "container");
        assert_eq!(json["Actor"]["ID"], "a");
        assert_eq!(json["status"], "start");
    }

    #[test]
    fn filters() {
        let events = Events::new();
        let attrs = BTreeMap::from([
            ("name".to_string(), "web".to_string()),
            ("image".to_string(), "busybox".to_string()),
        ]);
        events.emit(Kind::Container, "exec_start: sh", "abc", attrs);
        let (kept, _) = events.subscribe();
        let f = |k: &str, v: &str| {
            BTreeMap::from([(
                k.to_string(),
                std::collections::BTreeSet::from([v.to_string()]),
            )])
        };
        assert!(matches(&kept[0], &f("event", "exec_start")));
        assert!(matches(&kept[0], &f("container", "web")));
        assert!(matches(&kept[0], &f("container", "ab")));
        assert!(matches(&kept[0], &f("image", "busybox")));
        assert!(matches(&kept[0], &f("type", "container")));
        assert!(!matches(&kept[0], &f("type", "image")));
        assert!(!matches(&kept[0], &f("event", "die")));
    }
}
