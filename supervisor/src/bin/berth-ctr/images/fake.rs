//! An Images service that answers the way the supervisor would, and
//! records what an import sent: for the tests of `images`.

use std::sync::{Arc, Mutex};

use berth_proto::images::v1::images_server::Images;
use berth_proto::images::v1::*;
use berth_proto::types::v1::Descriptor;
use tonic::{Request, Response, Status, Streaming};

#[derive(Clone, Default)]
pub struct FakeImages {
    pub chunks: Arc<Mutex<Vec<usize>>>,
    pub options: Arc<Mutex<Option<ImportOptions>>>,
}

type Answers<T> = tokio_stream::Iter<std::vec::IntoIter<Result<T, Status>>>;

pub fn image(name: &str, size: i64) -> Image {
    Image {
        name: name.to_string(),
        target: Some(Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: format!("sha256:{}", "b".repeat(64)),
            size: 500,
            annotations: Default::default(),
        }),
        size,
        ..Default::default()
    }
}

fn not_found(name: &str) -> Status {
    Status::not_found(format!("image {name:?}: not found"))
}

#[tonic::async_trait]
impl Images for FakeImages {
    type PullStream = Answers<PullResponse>;

    async fn pull(
        &self,
        request: Request<PullRequest>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let reference = request.into_inner().reference;
        let layer = |state: ProgressState, offset| Progress {
            digest: format!("sha256:{}", "a".repeat(64)),
            kind: "layer".into(),
            state: state as i32,
            offset,
            total: 100,
        };
        Ok(Response::new(tokio_stream::iter(vec![
            Ok(PullResponse {
                progress: vec![layer(ProgressState::Downloading, 50)],
                image: None,
            }),
            Ok(PullResponse {
                progress: vec![layer(ProgressState::Done, 100)],
                image: Some(image(&reference, 100)),
            }),
        ])))
    }

    type PushStream = Answers<PushResponse>;

    async fn push(&self, _: Request<PushRequest>) -> Result<Response<Self::PushStream>, Status> {
        Err(Status::unimplemented("push"))
    }

    async fn get(&self, _: Request<GetImageRequest>) -> Result<Response<Image>, Status> {
        Err(Status::unimplemented("get"))
    }

    async fn list(
        &self,
        _: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        Ok(Response::new(ListImagesResponse {
            images: vec![image("b:1", 2048), image("a:1", 10)],
        }))
    }

    async fn tag(&self, _: Request<TagImageRequest>) -> Result<Response<Image>, Status> {
        Err(Status::unimplemented("tag"))
    }

    async fn create(&self, _: Request<CreateImageRequest>) -> Result<Response<Image>, Status> {
        Err(Status::unimplemented("create"))
    }

    async fn delete(&self, request: Request<DeleteImageRequest>) -> Result<Response<()>, Status> {
        match request.into_inner().name.as_str() {
            "missing" => Err(not_found("missing")),
            _ => Ok(Response::new(())),
        }
    }

    async fn import(
        &self,
        request: Request<Streaming<ImportRequest>>,
    ) -> Result<Response<ImportResponse>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("no options"))?;
        let options = first
            .options
            .ok_or_else(|| Status::invalid_argument("no options"))?;
        if !first.data.is_empty() {
            return Err(Status::invalid_argument("data in the first message"));
        }
        let mut total = 0;
        while let Some(message) = stream.message().await? {
            if message.options.is_some() {
                return Err(Status::invalid_argument("options after the first message"));
            }
            total += message.data.len() as i64;
            self.chunks.lock().unwrap().push(message.data.len());
        }
        let name = options.name.clone();
        *self.options.lock().unwrap() = Some(options);
        Ok(Response::new(ImportResponse {
            images: vec![image(&name, total)],
        }))
    }

    type ExportStream = Answers<ExportResponse>;

    async fn export(
        &self,
        request: Request<ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let request = request.into_inner();
        if let Some(name) = request.names.iter().find(|n| *n == "missing") {
            return Err(not_found(name));
        }
        Ok(Response::new(tokio_stream::iter(vec![
            Ok(ExportResponse {
                data: b"abc".to_vec(),
            }),
            Ok(ExportResponse {
                data: b"def".to_vec(),
            }),
        ])))
    }

    async fn check_auth(
        &self,
        _request: Request<CheckAuthRequest>,
    ) -> Result<Response<()>, Status> {
        Ok(Response::new(()))
    }
}
