//! containerd client over its gRPC API on the unix socket: task PID (`Tasks.Get`), task kill
//! (`Tasks.Kill`), and pod-sandbox lookup (`Containers.List` by CRI labels, then `Tasks.Get`).
//!
//! The channel is created on first use and cached. Any transport-level failure drops it, so the
//! next call reconnects: a restarted containerd is picked up without restarting faultd.
use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Request, Status};

use super::{chain, RuntimeAt, RuntimeError};
use crate::proto::containerd::services::containers::v1::containers_client::ContainersClient;
use crate::proto::containerd::services::containers::v1::ListContainersRequest;
use crate::proto::containerd::services::tasks::v1::tasks_client::TasksClient;
use crate::proto::containerd::services::tasks::v1::{GetRequest, KillRequest};
use crate::proto::containerd::v1::types::Status as TaskStatus;

/// gRPC metadata key that selects the containerd namespace.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";
/// Responses above this are refused (a List without filters on a big node can be several MiB).
const MAX_MESSAGE: usize = 64 << 20;

#[derive(Debug)]
pub(super) struct Containerd {
    pub(super) at: RuntimeAt,
    namespace: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    timeout: Duration,
    channel: tokio::sync::Mutex<Option<Channel>>,
}

impl Containerd {
    pub(super) fn new(at: RuntimeAt, timeout: Duration) -> Result<Self, RuntimeError> {
        let ns = at.namespace.clone().unwrap_or_default();
        let namespace = ns.parse().map_err(|_| RuntimeError::Internal {
            context: "containerd namespace".into(),
            detail: format!("{ns:?} is not a valid gRPC metadata value"),
        })?;
        Ok(Containerd {
            at,
            namespace,
            timeout,
            channel: tokio::sync::Mutex::new(None),
        })
    }

    fn unavailable(&self, detail: String) -> RuntimeError {
        RuntimeError::Unavailable {
            at: self.at.clone(),
            detail,
        }
    }

    async fn channel(&self) -> Result<Channel, RuntimeError> {
        let mut slot = self.channel.lock().await;
        if let Some(ch) = slot.as_ref() {
            return Ok(ch.clone());
        }
        let path: PathBuf = self.at.socket.clone();
        // The URI is required by the API but unused: the connector ignores it.
        let endpoint = Endpoint::from_static("http://containerd.invalid")
            .connect_timeout(self.timeout.min(Duration::from_secs(2)))
            .timeout(self.timeout);
        let connect = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }));
        // Bound the whole dial (socket connect + HTTP/2 handshake), not only the socket connect.
        let ch = match tokio::time::timeout(self.timeout, connect).await {
            Ok(Ok(ch)) => ch,
            Ok(Err(e)) => return Err(self.unavailable(format!("connecting: {}", chain(&e)))),
            Err(_) => {
                return Err(
                    self.unavailable(format!("connecting: no answer within {:?}", self.timeout))
                )
            }
        };
        *slot = Some(ch.clone());
        Ok(ch)
    }

    /// Drops the cached channel so the next call dials again.
    async fn forget_channel(&self) {
        *self.channel.lock().await = None;
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut()
            .insert(NAMESPACE_HEADER, self.namespace.clone());
        r
    }

    /// Maps a failed call; transport-class failures also drop the channel.
    async fn status_error(&self, st: Status, id: &str, what: &str) -> RuntimeError {
        match st.code() {
            Code::NotFound => RuntimeError::not_found(id, &self.at),
            Code::InvalidArgument => RuntimeError::Rejected {
                at: self.at.clone(),
                detail: format!("{what} {id:?}: {}", st.message()),
            },
            // Statuses made up by the client from a transport failure carry a source error;
            // containerd's own `Unknown` errors do not.
            c if matches!(
                c,
                Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded
            ) || (c == Code::Unknown && std::error::Error::source(&st).is_some()) =>
            {
                self.forget_channel().await;
                let mut detail = format!("{what} {id:?}: {} ({:?})", st.message(), st.code());
                if let Some(src) = std::error::Error::source(&st) {
                    detail.push_str(&format!(": {}", chain(src)));
                }
                self.unavailable(detail)
            }
            c => RuntimeError::Internal {
                context: format!("{what} {id:?} via {}", self.at),
                detail: format!("{c:?}: {}", st.message()),
            },
        }
    }

    /// The host PID of the task of container `id`; a stopped task is "not running".
    pub(super) async fn pid(&self, id: &str) -> Result<u32, RuntimeError> {
        let ch = self.channel().await?;
        let req = self.request(GetRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        });
        let resp = match TasksClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE)
            .get(req)
            .await
        {
            Ok(r) => r.into_inner(),
            Err(st) => return Err(self.status_error(st, id, "getting the task of").await),
        };
        let p = resp.process.unwrap_or_default();
        let status = TaskStatus::try_from(p.status).unwrap_or(TaskStatus::Unknown);
        if p.pid == 0 || status == TaskStatus::Stopped {
            return Err(RuntimeError::NotRunning {
                id: id.into(),
                at: self.at.clone(),
            });
        }
        Ok(p.pid)
    }

    /// SIGKILL to the task's init process (`all = false`, as Chaos Mesh does).
    pub(super) async fn kill(&self, id: &str) -> Result<(), RuntimeError> {
        let ch = self.channel().await?;
        let req = self.request(KillRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
            signal: libc::SIGKILL as u32,
            all: false,
        });
        match TasksClient::new(ch).kill(req).await {
            Ok(_) => Ok(()),
            Err(st) => Err(self.status_error(st, id, "killing the task of").await),
        }
    }

    /// The running sandbox of pod `pod_uid`: containers labelled
    /// `io.cri-containerd.kind=sandbox` and `io.kubernetes.pod.uid=<uid>`, newest first, the
    /// first whose task runs. `pod_uid` must already be validated (it goes into a filter).
    pub(super) async fn sandbox_pid(&self, pod_uid: &str) -> Result<u32, RuntimeError> {
        let ch = self.channel().await?;
        let filter = format!(
            r#"labels."io.cri-containerd.kind"==sandbox,labels."io.kubernetes.pod.uid"=="{pod_uid}""#
        );
        let req = self.request(ListContainersRequest {
            filters: vec![filter],
        });
        let list = match ContainersClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE)
            .list(req)
            .await
        {
            Ok(r) => r.into_inner().containers,
            Err(st) => {
                return Err(self
                    .status_error(st, pod_uid, "listing the sandboxes of pod")
                    .await)
            }
        };
        let mut list: Vec<_> = list
            .into_iter()
            .map(|c| {
                let created = c
                    .created_at
                    .map(|t| (t.seconds, t.nanos))
                    .unwrap_or_default();
                (created, c.id)
            })
            .collect();
        list.sort_by(|a, b| b.cmp(a));
        for (_, id) in list {
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
