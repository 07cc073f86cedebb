//! Swarm mode's resources (`/swarm`, `/nodes`, `/services`, `/tasks`,
//! `/secrets`, `/configs`). berthd is a single engine that never joins a
//! swarm, so it answers them as dockerd answers on a node outside one:
//! 503 with dockerd's words, which clients know (docker-py's `leave_swarm`
//! with `force` takes that answer as done; the docker CLI prints the hint).
//! Making or joining a swarm is not implemented.

use hyper::Method;

use super::{ApiError, Reply, Req};

/// dockerd's answer to a manager-only call outside a swarm.
const NOT_MANAGER: &str = "This node is not a swarm manager. Use \"docker swarm init\" or \
                           \"docker swarm join\" to connect this node to swarm and try again.";
/// dockerd's answer to leaving when there is nothing to leave.
const NOT_IN_SWARM: &str = "This node is not part of a swarm";

pub fn handle(req: &Req) -> Reply {
    let segments: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    Err(answer(&req.method, &segments))
}

fn answer(method: &Method, segments: &[&str]) -> ApiError {
    match (method, segments) {
        (&Method::POST, ["swarm", "leave"]) => ApiError::Unavailable(NOT_IN_SWARM.into()),
        (&Method::POST, ["swarm", "init" | "join"]) => {
            ApiError::NotImplemented("swarm mode is not supported by berthd".into())
        }
        _ => ApiError::Unavailable(NOT_MANAGER.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_outside_a_swarm() {
        let leave = answer(&Method::POST, &["swarm", "leave"]);
        assert_eq!(leave.status().as_u16(), 503);
        assert_eq!(leave.to_string(), NOT_IN_SWARM);
        for path in [
            &["swarm"][..],
            &["nodes"],
            &["services", "x"],
            &["secrets", "create"],
        ] {
            let e = answer(&Method::GET, path);
            assert_eq!(e.status().as_u16(), 503, "{path:?}");
            assert!(e
                .to_string()
                .starts_with("This node is not a swarm manager"));
        }
        assert_eq!(
            answer(&Method::POST, &["swarm", "init"]).status().as_u16(),
            501
        );
    }
}
