//! What every RPC shares: the caller's identity and request metadata ([`CallContext`]) and the
//! wrapper that runs a handler in its tracing span and records its code and latency.
use std::future::Future;
use std::time::Instant;

use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::state::DaemonState;

/// gRPC metadata header the Chaos Mesh controller sets to `<namespace>/<name>` of the chaos.
pub const NAMESPACED_NAME_HEADER: &str = "namespaced-name";

/// Who is calling: the client certificate's name, or the peer address without TLS.
pub fn peer_of<T>(req: &Request<T>) -> String {
    if let Some(certs) = req.peer_certs() {
        if let Some(id) = crate::tls::peer_identity(&certs) {
            return id;
        }
    }
    req.remote_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "local".into())
}

fn header<T>(req: &Request<T>, name: &str) -> String {
    req.metadata()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// What every RPC handler receives besides its message: caller identity and request metadata.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub peer: String,
    pub namespaced_name: String,
    /// `faultd-ttl` header, if any (a Go duration or seconds).
    pub ttl_header: Option<String>,
    /// `faultd-lease` header, if any.
    pub lease_header: Option<String>,
}

impl CallContext {
    pub fn of<T>(req: &Request<T>) -> Self {
        let opt = |n: &str| Some(header(req, n)).filter(|s| !s.is_empty());
        CallContext {
            peer: peer_of(req),
            namespaced_name: header(req, NAMESPACED_NAME_HEADER),
            ttl_header: opt("faultd-ttl"),
            lease_header: opt("faultd-lease"),
        }
    }
}

/// Runs one RPC inside its tracing span and records its code and latency.
pub async fn handle<Req, Resp, F, Fut>(
    state: &DaemonState,
    service: &'static str,
    method: &'static str,
    req: Request<Req>,
    container_id: impl FnOnce(&Req) -> String,
    f: F,
) -> Result<Response<Resp>, Status>
where
    F: FnOnce(CallContext, Req) -> Fut,
    Fut: Future<Output = Result<Resp, Status>>,
{
    let _inflight = state.track_call();
    let started = Instant::now();
    let ctx = CallContext::of(&req);
    let msg = req.into_inner();
    let span = tracing::info_span!(
        "rpc",
        method = format_args!("{service}/{method}"),
        peer = %ctx.peer,
        container_id = %container_id(&msg),
        namespaced_name = %ctx.namespaced_name,
    );
    let result = f(ctx, msg).instrument(span.clone()).await;
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    };
    let elapsed = started.elapsed();
    state
        .metrics
        .observe_rpc(service, method, code, elapsed.as_secs_f64());
    span.in_scope(|| match &result {
        // Faults log their own apply and end at info; a line per successful call would double
        // them and cost every call a formatted write on its reply path.
        Ok(_) => tracing::debug!(code = ?code, elapsed_ms = elapsed.as_secs_f64() * 1e3, "rpc done"),
        Err(s) => tracing::warn!(code = ?code, message = %s.message(), elapsed_ms = elapsed.as_secs_f64() * 1e3, "rpc failed"),
    });
    result.map(Response::new)
}
