//! The Events service: decodes, calls `crate::events` (publish, and a
//! subscription that replays stored then live events), encodes.

use std::sync::Arc;

use berth_proto::events::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::error::stopped;
use super::{labels, namespace, timestamp, BoxStream, Service};
use crate::events::Event;

fn envelope(e: &Event) -> pb::Envelope {
    pb::Envelope {
        sequence: e.sequence,
        timestamp: timestamp(e.time),
        namespace: e.namespace.clone(),
        topic: e.topic.clone(),
        attributes: e.attributes.clone().into_iter().collect(),
    }
}

#[tonic::async_trait]
impl pb::events_server::Events for Service {
    async fn publish(&self, req: Request<pb::PublishRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let events = Arc::clone(&self.events);
        tokio::task::spawn_blocking(move || events.publish(&ns, &r.topic, labels(r.attributes)))
            .await
            .map_err(stopped)??;
        Ok(Response::new(()))
    }

    type SubscribeStream = BoxStream<pb::Envelope>;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let mut subscription = match r.after_sequence {
            // Reads the stored events: off the async threads.
            Some(after) => {
                let events = Arc::clone(&self.events);
                tokio::task::spawn_blocking(move || events.subscription(&ns, r.topics, Some(after)))
                    .await
                    .map_err(stopped)??
            }
            None => self.events.subscription(&ns, r.topics, None)?,
        };
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = subscription.next() => next,
                    _ = tx.closed() => return,
                };
                let Some(next) = next else {
                    return;
                };
                let end = next.is_err();
                let msg = next.map(|e| envelope(&e)).map_err(Status::from);
                if tx.send(msg).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
