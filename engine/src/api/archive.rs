//! `/containers/{id}/archive` (`docker cp`): decode, call
//! `crate::archive`, encode. The path's stat travels base64 JSON in the
//! `X-Docker-Container-Path-Stat` header.

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};
use tokio::sync::mpsc;

use super::{empty, stream, ApiError, Reply, Req};
use crate::archive::{self, ExtractOptions, PathStat};
use crate::Engine;

const STAT_HEADER: &str = "x-docker-container-path-stat";

pub async fn handle(engine: &Arc<Engine>, req: &mut Req, id: &str) -> Reply {
    let c = engine.containers.get(id)?;
    let path = match req.query.get("path") {
        Some(p) if !p.is_empty() => p.to_string(),
        _ => {
            return Err(ApiError::BadRequest(
                "bad parameter: path cannot be empty".into(),
            ))
        }
    };
    match req.method {
        Method::HEAD => {
            let stat = archive::stat(engine, &c, &path).await?;
            let mut resp = empty(StatusCode::OK)?;
            add_stat(&mut resp, &stat)?;
            Ok(resp)
        }
        Method::GET => {
            let (stat, rx) = archive::get(engine, &c, &path).await?;
            let mut resp = stream::streamed("application/x-tar", rx);
            add_stat(&mut resp, &stat)?;
            Ok(resp)
        }
        Method::PUT => {
            let opts = ExtractOptions {
                no_overwrite_dir_non_dir: req.query.flag("noOverwriteDirNonDir"),
                owner: None,
            };
            let copy_uid_gid = req.query.flag("copyUIDGID");
            let (tx, rx) = mpsc::channel(64);
            if let Some(mut body) = req.body.take() {
                tokio::spawn(async move {
                    while let Some(frame) = body.frame().await {
                        let item = match frame {
                            Ok(f) => match f.into_data() {
                                Ok(data) => Ok(data),
                                Err(_) => continue,
                            },
                            Err(e) => Err(std::io::Error::other(e)),
                        };
                        let failed = item.is_err();
                        if tx.send(item).await.is_err() || failed {
                            break;
                        }
                    }
                });
            }
            archive::put(engine, &c, &path, opts, copy_uid_gid, rx).await?;
            empty(StatusCode::OK)
        }
        _ => Err(ApiError::NoRoute),
    }
}

fn add_stat(resp: &mut super::Response, stat: &PathStat) -> Result<(), ApiError> {
    let value = HeaderValue::from_str(&stat.header_value())
        .map_err(|e| ApiError::Internal(format!("path stat header: {e}")))?;
    resp.headers_mut().insert(STAT_HEADER, value);
    Ok(())
}
