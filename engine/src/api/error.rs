//! The one place a failure becomes Docker's status code and body,
//! `{"message": "..."}`.

use hyper::StatusCode;

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
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
        ];
        for (err, code) in table {
            assert_eq!(err.status().as_u16(), code, "{err:?}");
        }
    }
}
