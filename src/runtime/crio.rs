//! CRI-O client: its inspect endpoint (`GET /containers/<id>`, `Host: crio`) on the CRI-O unix
//! socket gives the container's PID. CRI-O has no kill endpoint, so kill is a signal to that
//! PID, done by the registry after checking the PID's identity and cgroup.
use std::time::Duration;

use http::{Method, StatusCode};

use super::unix_http::{error_message, request};
use super::{RuntimeAt, RuntimeError};

#[derive(Debug)]
pub(super) struct Crio {
    pub(super) at: RuntimeAt,
    pub(super) timeout: Duration,
}

impl Crio {
    /// `GET /containers/<id>` → JSON `pid`; 0 means not running.
    pub(super) async fn pid(&self, id: &str) -> Result<u32, RuntimeError> {
        let (status, body) = request(
            &self.at.socket,
            Method::GET,
            &format!("/containers/{id}"),
            "crio",
            self.timeout,
        )
        .await
        .map_err(|e| {
            if e.unreachable() {
                RuntimeError::Unavailable {
                    at: self.at.clone(),
                    detail: e.to_string(),
                }
            } else {
                RuntimeError::Internal {
                    context: self.at.to_string(),
                    detail: e.to_string(),
                }
            }
        })?;
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(RuntimeError::not_found(id, &self.at)),
            s => {
                return Err(RuntimeError::Internal {
                    context: format!("inspecting the container via {}", self.at),
                    detail: format!("HTTP {s}: {}", error_message(&body)),
                })
            }
        }
        let bad = |detail: String| RuntimeError::Internal {
            context: format!("inspect response from {}", self.at),
            detail,
        };
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
        let pid = v
            .get("pid")
            .and_then(|p| p.as_i64())
            .ok_or_else(|| bad("no numeric \"pid\"".into()))?;
        match u32::try_from(pid) {
            Ok(0) => Err(RuntimeError::NotRunning {
                id: id.into(),
                at: self.at.clone(),
            }),
            Ok(p) => Ok(p),
            Err(_) => Err(bad(format!("pid {pid} out of range"))),
        }
    }
}
