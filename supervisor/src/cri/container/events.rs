//! GetContainerEvents: the CRI's container events, made from the
//! supervisor's event exchange as they are published: a CRI container's
//! create and delete (topics of this module), its task's start and its
//! init's exit; each with the container's status and its pod's (but a
//! delete, after which there is no container to tell of).

use berth_proto::cri::v1 as cri;
use futures_util::StreamExt as _;
use tokio::sync::broadcast;

use super::{TOPIC_CREATED, TOPIC_DELETED};
use crate::cri::{CallStream, Cri, NAMESPACE};
use crate::events::Event;

/// The CRI event type an exchange event is, for a container of the CRI.
pub fn event_type(event: &Event) -> Option<cri::ContainerEventType> {
    use cri::ContainerEventType as T;
    if event.namespace != NAMESPACE || event.attributes.contains_key("exec_id") {
        return None;
    }
    match event.topic.as_str() {
        TOPIC_CREATED => Some(T::ContainerCreatedEvent),
        "/tasks/start" => Some(T::ContainerStartedEvent),
        "/tasks/exit" => Some(T::ContainerStoppedEvent),
        TOPIC_DELETED => Some(T::ContainerDeletedEvent),
        _ => None,
    }
}

/// The response for one exchange event, or `None` when it is not about a
/// CRI container (a sandbox's pause task, another namespace).
async fn response(cri: &Cri, event: &Event) -> Option<cri::ContainerEventResponse> {
    let kind = event_type(event)?;
    let id = event.attributes.get("container_id")?.clone();
    let mut statuses = Vec::new();
    let mut pod = None;
    if kind != cri::ContainerEventType::ContainerDeletedEvent {
        // Not a CRI container (a pod's pause task): no event.
        let rec = cri.store.container(&id).ok()??;
        if let Ok((status, _)) = super::status::status(cri, &id, false).await {
            statuses.push(status);
        }
        pod = crate::cri::sandbox::status::get(cri, &rec.sandbox_id)
            .await
            .ok()
            .map(|view| view.to_status());
    }
    Some(cri::ContainerEventResponse {
        container_id: id,
        container_event_type: kind as i32,
        created_at: event.time as i64,
        pod_sandbox_status: pod,
        containers_statuses: statuses,
    })
}

/// The stream of events from now on, until the supervisor stops.
pub fn stream(cri: Cri) -> CallStream<cri::ContainerEventResponse> {
    let rx = cri.events.subscribe();
    let events = futures_util::stream::unfold((cri, rx), |(cri, mut rx)| async move {
        loop {
            match rx.recv().await {
                Ok(event) => {
                    if let Some(r) = response(&cri, &event).await {
                        return Some((Ok(r), (cri, rx)));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "container events: a slow reader missed events");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    events.boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn event(ns: &str, topic: &str, exec: bool) -> Event {
        let mut attributes = BTreeMap::from([("container_id".to_string(), "c1".to_string())]);
        if exec {
            attributes.insert("exec_id".into(), "e1".into());
        }
        Event {
            sequence: 1,
            time: 5,
            namespace: ns.into(),
            topic: topic.into(),
            attributes,
        }
    }

    #[test]
    fn topics_map_to_event_types() {
        use cri::ContainerEventType as T;
        assert_eq!(
            event_type(&event(NAMESPACE, TOPIC_CREATED, false)),
            Some(T::ContainerCreatedEvent)
        );
        assert_eq!(
            event_type(&event(NAMESPACE, "/tasks/start", false)),
            Some(T::ContainerStartedEvent)
        );
        assert_eq!(
            event_type(&event(NAMESPACE, "/tasks/exit", false)),
            Some(T::ContainerStoppedEvent)
        );
        assert_eq!(
            event_type(&event(NAMESPACE, TOPIC_DELETED, false)),
            Some(T::ContainerDeletedEvent)
        );
        assert_eq!(event_type(&event(NAMESPACE, "/tasks/exit", true)), None);
        assert_eq!(event_type(&event("default", "/tasks/start", false)), None);
        assert_eq!(event_type(&event(NAMESPACE, "/tasks/oom", false)), None);
    }
}
