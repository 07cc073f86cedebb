//! The CRI ImageService: decodes each call, asks `images`, encodes.

use std::collections::{BTreeMap, HashMap};

use berth_proto::cri::v1 as cri;
use berth_proto::cri::v1::image_service_server::ImageService;
use tonic::{Request, Response, Status};

use super::images::{self, CriImage, CriImageError};
use super::{CallStream, Cri, NAMESPACE};
use crate::images::ImageError;
use crate::registry::RegistryError;

/// The gRPC status of a CRI image error, by variant.
fn status(e: CriImageError) -> Status {
    let code = match &e {
        CriImageError::EmptyReference
        | CriImageError::InvalidReference { .. }
        | CriImageError::InvalidAuth(_) => tonic::Code::InvalidArgument,
        CriImageError::Pull { source, .. } => match source.as_ref() {
            ImageError::Reference(_) | ImageError::InvalidPlatform(_) => {
                tonic::Code::InvalidArgument
            }
            ImageError::NotFound(_)
            | ImageError::NoMatchingPlatform { .. }
            | ImageError::Registry(RegistryError::NotFound { .. }) => tonic::Code::NotFound,
            ImageError::Registry(RegistryError::Unauthorized { .. }) => {
                tonic::Code::PermissionDenied
            }
            _ => tonic::Code::Unknown,
        },
        CriImageError::Store(_) | CriImageError::BadImage { .. } | CriImageError::Usage { .. } => {
            tonic::Code::Internal
        }
    };
    Status::new(code, e.to_string())
}

fn image_pb(image: CriImage) -> cri::Image {
    cri::Image {
        id: image.id.clone(),
        repo_tags: image.repo_tags,
        repo_digests: image.repo_digests,
        size: image.size,
        uid: image.uid.map(|value| cri::Int64Value { value }),
        username: image.username,
        spec: None,
        pinned: false,
    }
}

/// What containerd puts under `info` for a verbose ImageStatus.
fn verbose_info(image: &CriImage) -> HashMap<String, String> {
    let info = serde_json::json!({
        "chainID": image.chain_id,
        "imageSpec": image.config,
    });
    HashMap::from([("info".to_string(), info.to_string())])
}

fn image_ref(spec: Option<cri::ImageSpec>) -> String {
    spec.map(|s| s.image).unwrap_or_default()
}

/// Runs blocking store work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CriImageError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("image call stopped: {e}")))?
        .map_err(status)
}

#[tonic::async_trait]
impl ImageService for Cri {
    type StreamImagesStream = CallStream<cri::StreamImagesResponse>;

    async fn list_images(
        &self,
        req: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        let wanted = req
            .into_inner()
            .filter
            .map(|f| image_ref(f.image))
            .filter(|s| !s.is_empty());
        let store = self.images.clone();
        let found = blocking(move || match wanted {
            Some(w) => Ok(images::find(&store, &w)?.into_iter().collect::<Vec<_>>()),
            None => Ok(images::list(&store)?.into_values().collect()),
        })
        .await?;
        Ok(Response::new(cri::ListImagesResponse {
            images: found.into_iter().map(image_pb).collect(),
        }))
    }

    async fn stream_images(
        &self,
        _: Request<cri::StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        Err(Status::unimplemented(
            "berth's CRI does not implement StreamImages yet; use ListImages",
        ))
    }

    async fn image_status(
        &self,
        req: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let r = req.into_inner();
        let wanted = image_ref(r.image);
        let store = self.images.clone();
        let found = blocking(move || images::find(&store, &wanted)).await?;
        // An unknown image is an empty answer, not an error (kubelet asks
        // before every pull).
        let Some(image) = found else {
            return Ok(Response::new(cri::ImageStatusResponse::default()));
        };
        let info = if r.verbose {
            verbose_info(&image)
        } else {
            HashMap::new()
        };
        Ok(Response::new(cri::ImageStatusResponse {
            image: Some(image_pb(image)),
            info,
        }))
    }

    async fn pull_image(
        &self,
        req: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        let r = req.into_inner();
        // The sandbox config only matters to runtime handlers that pull
        // per pod; one store serves every pod here.
        let _ = r.sandbox_config;
        let reference = images::normalise(&image_ref(r.image)).map_err(status)?;
        let creds = match r.auth {
            Some(a) => images::credentials(
                &reference.registry,
                &images::AuthFields {
                    username: &a.username,
                    password: &a.password,
                    auth: &a.auth,
                    server_address: &a.server_address,
                    identity_token: &a.identity_token,
                    registry_token: &a.registry_token,
                },
            )
            .map_err(status)?,
            None => None,
        };
        let (record, id) = images::pull(&self.images, &reference, creds)
            .await
            .map_err(status)?;
        let what = if record.created == record.updated {
            "/images/create"
        } else {
            "/images/update"
        };
        let attributes = BTreeMap::from([
            ("name".to_string(), record.name.clone()),
            ("digest".to_string(), record.target.digest.clone()),
        ]);
        self.events.enqueue(NAMESPACE, what, attributes, None);
        Ok(Response::new(cri::PullImageResponse { image_ref: id }))
    }

    async fn remove_image(
        &self,
        req: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let wanted = image_ref(req.into_inner().image);
        if wanted.is_empty() {
            return Err(status(CriImageError::EmptyReference));
        }
        let store = self.images.clone();
        let removed = blocking(move || images::remove(&store, &wanted)).await?;
        for record in &removed {
            let attributes = BTreeMap::from([
                ("name".to_string(), record.name.clone()),
                ("digest".to_string(), record.target.digest.clone()),
            ]);
            self.events
                .enqueue(NAMESPACE, "/images/delete", attributes, None);
        }
        if !removed.is_empty() {
            crate::gc::collect_now(&self.images)
                .await
                .map_err(|e| Status::internal(format!("collect garbage: {e}")))?;
        }
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        let sample = self.fs_usage.get().await.map_err(status)?;
        let usage = cri::FilesystemUsage {
            timestamp: sample.timestamp_ns,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: self.fs_usage.dir().display().to_string(),
            }),
            used_bytes: Some(cri::UInt64Value {
                value: sample.bytes,
            }),
            inodes_used: Some(cri::UInt64Value {
                value: sample.inodes,
            }),
        };
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![usage.clone()],
            container_filesystems: vec![usage],
        }))
    }
}
