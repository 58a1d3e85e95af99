//! Docker Engine API client (inspect, kill, sandbox lookup) over the Docker unix socket.
use std::time::Duration;

use http::{Method, StatusCode};

use super::unix_http::{error_message, query_escape, request, HttpError};
use super::{RuntimeAt, RuntimeError};

#[derive(Debug)]
pub(super) struct Docker {
    pub(super) at: RuntimeAt,
    pub(super) timeout: Duration,
}

impl Docker {
    async fn call(&self, method: Method, pq: &str) -> Result<(StatusCode, Vec<u8>), RuntimeError> {
        request(&self.at.socket, method, pq, "docker", self.timeout)
            .await
            .map(|(s, b)| (s, b.to_vec()))
            .map_err(|e| self.transport(e))
    }

    fn transport(&self, e: HttpError) -> RuntimeError {
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
    }

    fn unexpected(&self, what: &str, status: StatusCode, body: &[u8]) -> RuntimeError {
        RuntimeError::Internal {
            context: format!("{what} via {}", self.at),
            detail: format!("HTTP {status}: {}", error_message(body)),
        }
    }

    /// `GET /containers/<id>/json` → `.State.Pid`; 0 means not running.
    pub(super) async fn pid(&self, id: &str) -> Result<u32, RuntimeError> {
        let (status, body) = self
            .call(Method::GET, &format!("/containers/{id}/json"))
            .await?;
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(RuntimeError::not_found(id, &self.at)),
            s => return Err(self.unexpected("inspecting the container", s, &body)),
        }
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| RuntimeError::Internal {
                context: format!("inspect response from {}", self.at),
                detail: e.to_string(),
            })?;
        let pid = v
            .pointer("/State/Pid")
            .and_then(|p| p.as_u64())
            .ok_or_else(|| RuntimeError::Internal {
                context: format!("inspect response from {}", self.at),
                detail: "no numeric .State.Pid".into(),
            })?;
        match u32::try_from(pid) {
            Ok(0) => Err(RuntimeError::NotRunning {
                id: id.into(),
                at: self.at.clone(),
            }),
            Ok(p) => Ok(p),
            Err(_) => Err(RuntimeError::Internal {
                context: format!("inspect response from {}", self.at),
                detail: format!(".State.Pid {pid} out of range"),
            }),
        }
    }

    /// `POST /containers/<id>/kill?signal=SIGKILL`.
    pub(super) async fn kill(&self, id: &str) -> Result<(), RuntimeError> {
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/containers/{id}/kill?signal=SIGKILL"),
            )
            .await?;
        match status {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND => Err(RuntimeError::not_found(id, &self.at)),
            // "Container <id> is not running"
            StatusCode::CONFLICT => Err(RuntimeError::NotRunning {
                id: id.into(),
                at: self.at.clone(),
            }),
            s => Err(self.unexpected("killing the container", s, &body)),
        }
    }

    /// The running pod sandbox (`io.kubernetes.docker.type=podsandbox`, as dockershim and
    /// cri-dockerd label it) of pod `pod_uid`, newest first.
    pub(super) async fn sandbox_pid(&self, pod_uid: &str) -> Result<u32, RuntimeError> {
        let filters = serde_json::json!({
            "label": [
                format!("io.kubernetes.pod.uid={pod_uid}"),
                "io.kubernetes.docker.type=podsandbox",
            ],
            "status": ["running"],
        });
        let pq = format!(
            "/containers/json?filters={}",
            query_escape(&filters.to_string())
        );
        let (status, body) = self.call(Method::GET, &pq).await?;
        if status != StatusCode::OK {
            return Err(self.unexpected("listing pod sandboxes", status, &body));
        }
        let list: Vec<serde_json::Value> =
            serde_json::from_slice(&body).map_err(|e| RuntimeError::Internal {
                context: format!("container list from {}", self.at),
                detail: e.to_string(),
            })?;
        let mut candidates: Vec<(i64, String)> = list
            .iter()
            .filter_map(|c| {
                let id = c.get("Id")?.as_str()?.to_string();
                let created = c.get("Created").and_then(|v| v.as_i64()).unwrap_or(0);
                Some((created, id))
            })
            .collect();
        candidates.sort_by(|a, b| b.cmp(a));
        for (_, id) in candidates {
            // Only hex ids are put into a URL path.
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            match self.pid(&id).await {
                Ok(pid) => return Ok(pid),
                Err(e) if e.kind() == super::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Err(RuntimeError::SandboxNotFound {
            pod_uid: pod_uid.into(),
            at: self.at.clone(),
        })
    }
}
