//! Minimal HTTP/1.1 over a unix socket (Docker Engine API, CRI-O's inspect endpoint): one
//! connection per request, a timeout on the whole exchange, a cap on the body size.
use std::path::Path;
use std::time::Duration;

use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// Responses larger than this are refused (a container inspect is a few KiB).
const MAX_BODY: usize = 8 << 20;

/// Why an exchange failed. `Connect` and `Timeout` mean the runtime is unreachable.
#[derive(Debug, thiserror::Error)]
pub(super) enum HttpError {
    #[error("connecting: {0}")]
    Connect(std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP exchange failed: {0}")]
    Protocol(String),
}

impl HttpError {
    pub(super) fn unreachable(&self) -> bool {
        matches!(self, HttpError::Connect(_) | HttpError::Timeout(_))
    }
}

/// Sends `method path_and_query` with `Host: host` and an empty body; returns status and body.
pub(super) async fn request(
    socket: &Path,
    method: Method,
    path_and_query: &str,
    host: &str,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), HttpError> {
    match tokio::time::timeout(timeout, exchange(socket, method, path_and_query, host)).await {
        Ok(r) => r,
        Err(_) => Err(HttpError::Timeout(timeout)),
    }
}

async fn exchange(
    socket: &Path,
    method: Method,
    path_and_query: &str,
    host: &str,
) -> Result<(StatusCode, Bytes), HttpError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(HttpError::Connect)?;
    let proto = |e: &dyn std::fmt::Display| HttpError::Protocol(e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| proto(&e))?;
    // The connection future must be polled for the request to make progress; it ends when the
    // sender is dropped (or is aborted with this task on timeout).
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "faultd")
        .body(Empty::<Bytes>::new())
        .map_err(|e| proto(&e))?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(|e| proto(&e))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| proto(&*e))?
            .to_bytes();
        Ok((status, body))
    }
    .await;
    drop(sender);
    driver.abort();
    result
}

/// Percent-encodes a query parameter value (RFC 3986 unreserved characters pass through).
pub(super) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `message` of an error body (Docker: `{"message": "..."}`), else the body as text.
pub(super) fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
        .unwrap_or_else(|| {
            String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(512)
                .collect()
        })
}

#[cfg(test)]
pub(crate) mod fake_server {
    //! A tiny HTTP/1.1 server on a unix socket for unit tests. The handler sees method and
    //! path+query and returns (status, JSON body); every request is recorded.
    use std::convert::Infallible;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};

    use http::{Request, Response, StatusCode};
    use http_body_util::Full;
    use hyper::body::{Bytes, Incoming};
    use hyper_util::rt::TokioIo;
    use tokio::net::UnixListener;

    pub type Handler = dyn Fn(&str, &str) -> (StatusCode, String) + Send + Sync;

    pub struct FakeServer {
        pub socket: PathBuf,
        /// "METHOD path?query host" of every request, in order.
        pub requests: Arc<Mutex<Vec<String>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for FakeServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    pub fn start(dir: &Path, name: &str, handler: Arc<Handler>) -> FakeServer {
        let socket = dir.join(name);
        let listener = UnixListener::bind(&socket).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let pq = req
                            .uri()
                            .path_and_query()
                            .map(|p| p.as_str().to_string())
                            .unwrap_or_default();
                        let host = req
                            .headers()
                            .get(http::header::HOST)
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        log.lock()
                            .unwrap()
                            .push(format!("{} {pq} {host}", req.method()));
                        let (status, body) = handler(req.method().as_str(), &pq);
                        async move {
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeServer {
            socket,
            requests,
            task,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn escaping() {
        assert_eq!(query_escape("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(
            query_escape("{\"l\":[\"k=v\"]}"),
            "%7B%22l%22%3A%5B%22k%3Dv%22%5D%7D"
        );
        assert_eq!(
            error_message(br#"{"message":"No such container: x"}"#),
            "No such container: x"
        );
        assert_eq!(error_message(b"plain text\n"), "plain text");
    }

    #[tokio::test]
    async fn round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let srv = fake_server::start(
            dir.path(),
            "s.sock",
            Arc::new(|m: &str, p: &str| {
                (StatusCode::OK, format!("{{\"m\":\"{m}\",\"p\":\"{p}\"}}"))
            }),
        );
        let t = Duration::from_secs(2);
        let (st, body) = request(&srv.socket, Method::POST, "/x?y=1", "crio", t)
            .await
            .unwrap();
        assert_eq!(st, StatusCode::OK);
        assert_eq!(&body[..], br#"{"m":"POST","p":"/x?y=1"}"#);
        assert_eq!(srv.requests.lock().unwrap()[0], "POST /x?y=1 crio");
        let e = request(&dir.path().join("none.sock"), Method::GET, "/", "h", t)
            .await
            .unwrap_err();
        assert!(e.unreachable(), "{e}");
        // A listener that never answers: timeout, also "unreachable".
        let _silent = tokio::net::UnixListener::bind(dir.path().join("silent.sock")).unwrap();
        let e = request(
            &dir.path().join("silent.sock"),
            Method::GET,
            "/",
            "h",
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, HttpError::Timeout(_)), "{e}");
    }
}
