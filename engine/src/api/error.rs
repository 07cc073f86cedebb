//! The one place a failure becomes Docker's status code and body,
//! `{"message": "..."}`.

use hyper::StatusCode;

use crate::backend::BackendError;
use crate::images::ImageError;

/// A request that failed, with Docker's status for it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotModified(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Internal(String),
    #[error("page not found")]
    NoRoute,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::NotModified(_) => StatusCode::NOT_MODIFIED,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        let message = e.to_string();
        match e {
            BackendError::NotFound(_) => ApiError::NotFound(message),
            BackendError::AlreadyExists(_) | BackendError::FailedPrecondition(_) => {
                ApiError::Conflict(message)
            }
            BackendError::InvalidArgument(_) => ApiError::BadRequest(message),
            BackendError::Unauthorized(_) => ApiError::Unauthorized(message),
            BackendError::Unavailable(_) | BackendError::Internal(_) => ApiError::Internal(message),
        }
    }
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> Self {
        let message = e.to_string();
        match e {
            ImageError::NotFound(_)
            | ImageError::NoPlatform { .. }
            | ImageError::PullAccessDenied { .. }
            | ImageError::ManifestUnknown { .. } => ApiError::NotFound(message),
            ImageError::InvalidReference(_)
            | ImageError::InvalidArgument(_)
            | ImageError::ReadBody(_)
            | ImageError::Archive(_) => ApiError::BadRequest(message),
            ImageError::Conflict(_) => ApiError::Conflict(message),
            ImageError::Unauthorized(_) => ApiError::Unauthorized(message),
            ImageError::InvalidDocument { .. } => ApiError::Internal(message),
            ImageError::Backend(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let table = [
            (ApiError::BadRequest("x".into()), 400),
            (ApiError::NotFound("x".into()), 404),
            (ApiError::NoRoute, 404),
            (ApiError::Conflict("x".into()), 409),
            (ApiError::NotModified("x".into()), 304),
            (ApiError::Internal("x".into()), 500),
            (ApiError::Unauthorized("x".into()), 401),
        ];
        for (err, code) in table {
            assert_eq!(err.status().as_u16(), code, "{err:?}");
        }
    }
}

#[cfg(test)]
mod image_tests {
    use super::*;

    #[test]
    fn image_errors() {
        let reference = berth_client::reference::Reference::parse("A").unwrap_err();
        let table: Vec<(ImageError, u16)> = vec![
            (ImageError::NotFound("x".into()), 404),
            (ImageError::InvalidReference(reference), 400),
            (ImageError::InvalidArgument("x".into()), 400),
            (
                ImageError::NoPlatform {
                    name: "x".into(),
                    platform: "linux/amd64".into(),
                },
                404,
            ),
            (
                ImageError::InvalidDocument {
                    name: "x".into(),
                    what: "config",
                    digest: "d".into(),
                    source: serde_json::from_str::<u8>("x").unwrap_err(),
                },
                500,
            ),
            (ImageError::Conflict("x".into()), 409),
            (
                ImageError::PullAccessDenied {
                    repository: "x".into(),
                    message: "m".into(),
                },
                404,
            ),
            (
                ImageError::ManifestUnknown {
                    reference: "x".into(),
                },
                404,
            ),
            (ImageError::Unauthorized("x".into()), 401),
            (ImageError::ReadBody("x".into()), 400),
            (ImageError::Archive("x".into()), 400),
            (ImageError::Backend(BackendError::NotFound("x".into())), 404),
            (
                ImageError::Backend(BackendError::AlreadyExists("x".into())),
                409,
            ),
            (
                ImageError::Backend(BackendError::FailedPrecondition("x".into())),
                409,
            ),
            (
                ImageError::Backend(BackendError::InvalidArgument("x".into())),
                400,
            ),
            (
                ImageError::Backend(BackendError::Unauthorized("x".into())),
                401,
            ),
            (
                ImageError::Backend(BackendError::Unavailable("x".into())),
                500,
            ),
            (ImageError::Backend(BackendError::Internal("x".into())), 500),
        ];
        for (err, code) in table {
            let text = err.to_string();
            assert_eq!(ApiError::from(err).status().as_u16(), code, "{text}");
        }
    }
}
