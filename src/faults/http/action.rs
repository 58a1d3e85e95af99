//! What a matching rule does to a request or a response (chaos-tproxy
//! `chaos-tproxy-proxy/src/handler/http/action.rs`: `apply_request_action`,
//! `apply_response_action`), on hyper 1 messages with a boxed body.
//!
//! Order inside one rule, as upstream: **abort** (the connection ends, nothing else runs),
//! **delay**, **replace**, **patch**.
//! - Replace, request: path (the query stays), method, body, queries, headers (each named
//!   header's values are replaced by the one given). Response: code, body, headers.
//! - Patch, request: queries (appended, form-encoded), body (JSON merge patch, RFC 7396),
//!   headers (appended). Response: body, headers.
//!
//! A replaced or patched body drops `Content-Length` and `Transfer-Encoding`; hyper writes the
//! new length. A body to patch is read in full up to [`PATCH_LIMIT`]; a larger one, or one that
//! is not JSON, is forwarded unchanged.
use std::convert::Infallible;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, BodyStream, Full, StreamBody};
use hyper::body::Frame;
use serde_json::Value;

use super::HttpError;

/// Errors of a proxied body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type the proxy passes around: the peer's streaming body or one the rules built.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The largest body a JSON patch reads (bytes); larger bodies pass unchanged.
pub const PATCH_LIMIT: usize = 16 << 20;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

/// A rule's actions, validated.
#[derive(Debug, Clone, Default)]
pub struct Actions {
    pub abort: bool,
    pub delay: Option<Duration>,
    pub replace: Option<Replace>,
    pub patch: Option<Patch>,
}

/// `actions.replace`.
#[derive(Debug, Clone, Default)]
pub struct Replace {
    /// A path starting with `/` (an empty one was made `/`).
    pub path: Option<String>,
    pub method: Option<Method>,
    pub code: Option<StatusCode>,
    pub body: Option<Bytes>,
    /// Query parameters to set, in key order.
    pub queries: Vec<(String, String)>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// `actions.patch`.
#[derive(Debug, Clone, Default)]
pub struct Patch {
    /// A JSON merge patch.
    pub body: Option<Value>,
    /// Query parameters to append.
    pub queries: Vec<(String, String)>,
    /// Headers to append.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Applies one rule's actions to a request; `Err(HttpError::Aborted)` for an abort.
pub async fn apply_request(
    req: Request<Body>,
    actions: &Actions,
) -> Result<Request<Body>, HttpError> {
    if actions.abort {
        return Err(HttpError::Aborted);
    }
    if let Some(d) = actions.delay {
        tokio::time::sleep(d).await;
    }
    let (mut parts, mut body) = req.into_parts();
    if let Some(r) = &actions.replace {
        if let Some(path) = &r.path {
            parts.uri = with_path(&parts.uri, path);
        }
        if let Some(m) = &r.method {
            parts.method = m.clone();
        }
        if let Some(b) = &r.body {
            body = full(b.clone());
            drop_length(&mut parts.headers);
        }
        if !r.queries.is_empty() {
            parts.uri = with_replaced_queries(&parts.uri, &r.queries);
        }
        replace_headers(&mut parts.headers, &r.headers);
    }
    if let Some(p) = &actions.patch {
        if !p.queries.is_empty() {
            parts.uri = with_appended_queries(&parts.uri, &p.queries);
        }
        if let Some(patch) = &p.body {
            body = patch_body(body, &mut parts.headers, patch).await?;
        }
        append_headers(&mut parts.headers, &p.headers);
    }
    Ok(Request::from_parts(parts, body))
}

/// Applies one rule's actions to a response; `Err(HttpError::Aborted)` for an abort.
pub async fn apply_response(
    resp: Response<Body>,
    actions: &Actions,
) -> Result<Response<Body>, HttpError> {
    if actions.abort {
        return Err(HttpError::Aborted);
    }
    if let Some(d) = actions.delay {
        tokio::time::sleep(d).await;
    }
    let (mut parts, mut body) = resp.into_parts();
    if let Some(r) = &actions.replace {
        if let Some(code) = r.code {
            parts.status = code;
        }
        if let Some(b) = &r.body {
            body = full(b.clone());
            drop_length(&mut parts.headers);
        }
        replace_headers(&mut parts.headers, &r.headers);
    }
    if let Some(p) = &actions.patch {
        if let Some(patch) = &p.body {
            body = patch_body(body, &mut parts.headers, patch).await?;
        }
        append_headers(&mut parts.headers, &p.headers);
    }
    Ok(Response::from_parts(parts, body))
}

fn drop_length(headers: &mut HeaderMap) {
    headers.remove(CONTENT_LENGTH);
    headers.remove(TRANSFER_ENCODING);
}

fn replace_headers(headers: &mut HeaderMap, with: &[(HeaderName, HeaderValue)]) {
    for (n, v) in with {
        headers.insert(n.clone(), v.clone());
    }
}

fn append_headers(headers: &mut HeaderMap, with: &[(HeaderName, HeaderValue)]) {
    for (n, v) in with {
        headers.append(n.clone(), v.clone());
    }
}

/// Reads the body (up to [`PATCH_LIMIT`]) and merges `patch` into it when it is JSON.
async fn patch_body(
    mut body: Body,
    headers: &mut HeaderMap,
    patch: &Value,
) -> Result<Body, HttpError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| HttpError::Body(e.to_string()))?;
        // Trailers are dropped with the framing they belong to.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        if buf.len() > PATCH_LIMIT {
            // Too large to patch: replay what was read, then the rest, unchanged.
            let head = futures_util::stream::iter([Ok(Frame::data(buf.freeze()))]);
            let rest = BodyStream::new(body);
            return Ok(StreamBody::new(head.chain(rest)).boxed_unsync());
        }
    }
    drop_length(headers);
    match serde_json::from_slice::<Value>(&buf) {
        Ok(mut doc) => {
            merge_patch(&mut doc, patch);
            let out = serde_json::to_vec(&doc).map_err(|e| HttpError::Body(e.to_string()))?;
            Ok(full(out))
        }
        Err(_) => Ok(full(buf.freeze())),
    }
}

/// RFC 7396 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let Value::Object(t) = target else {
        unreachable!("made an object above")
    };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// `uri` with a new path (its query kept). An origin-form or absolute-form URI keeps its
/// scheme and authority; one without a path (`*`, authority-form) is left alone.
fn with_path(uri: &Uri, path: &str) -> Uri {
    let Some(pq) = uri.path_and_query() else {
        return uri.clone();
    };
    let new = match pq.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    with_path_and_query(uri, &new)
}

fn with_path_and_query(uri: &Uri, pq: &str) -> Uri {
    let Ok(pq) = PathAndQuery::try_from(pq) else {
        return uri.clone();
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq);
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

/// Sets query parameters: a key's first occurrence takes the new value and later ones go;
/// keys not present are appended; other parameters are kept as they were written.
fn with_replaced_queries(uri: &Uri, set: &[(String, String)]) -> Uri {
    let Some(pq) = uri.path_and_query() else {
        return uri.clone();
    };
    let mut done = vec![false; set.len()];
    let mut out: Vec<String> = Vec::new();
    for seg in pq
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
    {
        let key = form_decode(seg.split('=').next().unwrap_or(""));
        match set.iter().position(|(k, _)| *k == key) {
            Some(i) if done[i] => {}
            Some(i) => {
                done[i] = true;
                out.push(form_pair(&set[i].0, &set[i].1));
            }
            None => out.push(seg.to_string()),
        }
    }
    for (i, (k, v)) in set.iter().enumerate() {
        if !done[i] {
            out.push(form_pair(k, v));
        }
    }
    let new = if out.is_empty() {
        pq.path().to_string()
    } else {
        format!("{}?{}", pq.path(), out.join("&"))
    };
    with_path_and_query(uri, &new)
}

/// Appends query parameters, form-encoded (as upstream's `serde_urlencoded`).
fn with_appended_queries(uri: &Uri, add: &[(String, String)]) -> Uri {
    let Some(pq) = uri.path_and_query() else {
        return uri.clone();
    };
    let added: Vec<String> = add.iter().map(|(k, v)| form_pair(k, v)).collect();
    let new = match pq.query() {
        Some(q) if !q.is_empty() => format!("{}?{q}&{}", pq.path(), added.join("&")),
        _ => format!("{}?{}", pq.path(), added.join("&")),
    };
    with_path_and_query(uri, &new)
}

fn form_pair(k: &str, v: &str) -> String {
    format!("{}={}", form_encode(k), form_encode(v))
}

/// `application/x-www-form-urlencoded` (WHATWG): alphanumerics and `*-._` stay, space is `+`.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn body_of(b: Body) -> Bytes {
        b.collect().await.unwrap().to_bytes()
    }

    fn req(uri: &str, body: &str) -> Request<Body> {
        Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(CONTENT_LENGTH, body.len())
            .header("x-keep", "1")
            .header("x-multi", "a")
            .header("x-multi", "b")
            .body(full(body.to_string()))
            .unwrap()
    }

    fn hdr(n: &str, v: &str) -> (HeaderName, HeaderValue) {
        (n.parse().unwrap(), v.parse().unwrap())
    }

    #[test]
    fn merge_patch_is_rfc7396() {
        // RFC 7396 appendix A examples.
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
        ];
        for (mut t, p, want) in cases {
            merge_patch(&mut t, &p);
            assert_eq!(t, want, "patch {p}");
        }
    }

    #[test]
    fn query_rewrites() {
        let u: Uri = "/p?a=1&b=2&a=3&c=x+y".parse().unwrap();
        let set = vec![
            ("a".to_string(), "9".to_string()),
            ("z".into(), "a b".into()),
        ];
        assert_eq!(
            with_replaced_queries(&u, &set).to_string(),
            "/p?a=9&b=2&c=x+y&z=a+b"
        );
        let u: Uri = "/p".parse().unwrap();
        assert_eq!(with_replaced_queries(&u, &set).to_string(), "/p?a=9&z=a+b");
        // A key written encoded is the same key.
        let u: Uri = "/p?%61=1".parse().unwrap();
        assert_eq!(with_replaced_queries(&u, &set[..1]).to_string(), "/p?a=9");
        let add = vec![("k".to_string(), "v/&".to_string())];
        let u: Uri = "/p?a=1".parse().unwrap();
        assert_eq!(
            with_appended_queries(&u, &add).to_string(),
            "/p?a=1&k=v%2F%26"
        );
        let u: Uri = "/p".parse().unwrap();
        assert_eq!(with_appended_queries(&u, &add).to_string(), "/p?k=v%2F%26");
        let u: Uri = "/p?".parse().unwrap();
        assert_eq!(with_appended_queries(&u, &add).to_string(), "/p?k=v%2F%26");
        // Absolute-form keeps scheme and authority.
        let u: Uri = "http://h:1/old?q=1".parse().unwrap();
        assert_eq!(with_path(&u, "/new").to_string(), "http://h:1/new?q=1");
        assert_eq!(form_decode("a%2Fb+c%zz%4"), "a/b c%zz%4");
    }

    #[tokio::test]
    async fn request_replace_then_patch() {
        let actions = Actions {
            replace: Some(Replace {
                path: Some("/new".into()),
                method: Some(Method::PUT),
                body: Some(Bytes::from_static(br#"{"a":1,"b":2}"#)),
                queries: vec![("q".into(), "r".into())],
                headers: vec![hdr("x-multi", "z")],
                ..Replace::default()
            }),
            patch: Some(Patch {
                body: Some(json!({"b":null,"c":3})),
                queries: vec![("p".into(), "1".into())],
                headers: vec![hdr("x-multi", "y")],
            }),
            ..Actions::default()
        };
        let out = apply_request(req("/old?q=1&s=2", "ignored"), &actions)
            .await
            .unwrap();
        assert_eq!(out.method(), Method::PUT);
        assert_eq!(out.uri().to_string(), "/new?q=r&s=2&p=1");
        assert!(out.headers().get(CONTENT_LENGTH).is_none());
        let multi: Vec<_> = out.headers().get_all("x-multi").iter().collect();
        assert_eq!(multi, ["z", "y"]);
        assert_eq!(out.headers()["x-keep"], "1");
        assert_eq!(body_of(out.into_body()).await, r#"{"a":1,"c":3}"#);
    }

    #[tokio::test]
    async fn abort_comes_first_and_delay_before_replace() {
        let abort = Actions {
            abort: true,
            delay: Some(Duration::from_secs(3600)),
            ..Actions::default()
        };
        assert!(matches!(
            apply_request(req("/", ""), &abort).await,
            Err(HttpError::Aborted)
        ));
        let resp = Response::new(full("x"));
        assert!(matches!(
            apply_response(resp, &abort).await,
            Err(HttpError::Aborted)
        ));
        let delay = Actions {
            delay: Some(Duration::from_millis(50)),
            ..Actions::default()
        };
        let t = std::time::Instant::now();
        apply_request(req("/", ""), &delay).await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn response_replace_ignores_request_fields() {
        let actions = Actions {
            replace: Some(Replace {
                path: Some("/ignored".into()),
                method: Some(Method::DELETE),
                queries: vec![("q".into(), "r".into())],
                code: Some(StatusCode::SERVICE_UNAVAILABLE),
                body: Some(Bytes::from_static(b"down")),
                headers: vec![hdr("x-a", "1")],
            }),
            patch: Some(Patch {
                queries: vec![("q".into(), "r".into())],
                headers: vec![hdr("x-a", "2")],
                body: None,
            }),
            ..Actions::default()
        };
        let resp = Response::builder()
            .header(CONTENT_LENGTH, 2)
            .body(full("ok"))
            .unwrap();
        let out = apply_response(resp, &actions).await.unwrap();
        assert_eq!(out.status(), StatusCode::SERVICE_UNAVAILABLE);
        let a: Vec<_> = out.headers().get_all("x-a").iter().collect();
        assert_eq!(a, ["1", "2"]);
        assert!(out.headers().get(CONTENT_LENGTH).is_none());
        assert_eq!(body_of(out.into_body()).await, "down");
    }

    #[tokio::test]
    async fn patching_a_body_that_is_not_json_leaves_it() {
        let actions = Actions {
            patch: Some(Patch {
                body: Some(json!({"a":1})),
                ..Patch::default()
            }),
            ..Actions::default()
        };
        let out = apply_request(req("/", "not json"), &actions).await.unwrap();
        assert_eq!(body_of(out.into_body()).await, "not json");
        // A body over the limit streams through unchanged.
        let big = "x".repeat(PATCH_LIMIT + 10);
        let out = apply_request(req("/", &big), &actions).await.unwrap();
        assert_eq!(body_of(out.into_body()).await.len(), big.len());
    }
}
