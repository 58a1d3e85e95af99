//! HTTPChaos (`ApplyHttpChaos`): faultd's own transparent proxy in the pod's network
//! namespace behind one nf_tables `tproxy` table (`faults::firewall::tproxy`).
//!
//! What this module owns:
//! - [`rules`]: `ApplyHttpChaosRequest.rules` (a JSON list of Chaos Mesh
//!   `PodHttpChaosBaseRule`, as `controllers/podhttpchaos/controller.go` marshals
//!   `api/v1alpha1/podhttpchaos_types.go`) parsed and validated up front into [`Rule`]s; every
//!   error names the rule and the field ([`HttpError::Rule`]).
//! - [`tls`]: the `tls` JSON (`{"cert_file":{"type":"Contents","value":<base64>},…}`) into the
//!   two rustls configurations the proxy uses.
//! - [`selector`]: which rules match a request or a response.
//! - [`action`]: abort, delay, replace and patch on hyper 1 requests and responses.
//! - [`socket`]: the transparent listener and the upstream sockets, made in the pod's network
//!   namespace; [`route`]: the policy route that brings the app's replies back to the proxy.
//! - [`serve`]: the running proxies, one per pod network namespace; [`fault`]: the fault and
//!   its use case.
//! - [`proxy`]: serving one accepted client connection: sniffing TLS/HTTP, HTTP/1.1 with
//!   keep-alive through hyper (rules read afresh for every request, so they can be swapped live),
//!   or a byte splice when the client does not speak HTTP/1.
//!
//! # Semantics, and where they come from
//!
//! Upstream is chaos-mesh/chaos-tproxy (`76e30b82`, image tag v0.5.3), fed by chaos-daemon's
//! `pkg/chaosdaemon/httpchaos_server.go` through `pkg/chaosdaemon/tproxyconfig/config.go`
//! (chaos-mesh `608b61e7`). File names below are chaos-tproxy's unless they say otherwise.
//!
//! - **Which rules, in which order** (`chaos-tproxy-proxy/src/proxy/http/server.rs`,
//!   `HttpService::handle`): *every* matching rule applies, in list order, not the first match.
//!   The Request rules that match are chosen once, against the request as the client sent it,
//!   and then applied one after another (a rule that rewrites the path does not change which
//!   later rules apply). The request is then forwarded. The Response rules are chosen once,
//!   against the response as the server sent it and against the request *as forwarded* (after
//!   the Request rules), then applied in order. So all Request rules run before all Response
//!   rules whatever their positions in the list.
//! - **Inside one rule** (`handler/http/action.rs`): abort first (nothing else of the rule
//!   runs, later rules neither), then delay, then replace, then patch. Replace on a request:
//!   path, method, body, queries, headers; on a response: code, body, headers (path, method and
//!   queries of a Response rule are ignored). Patch on a request: queries, body, headers; on a
//!   response: body, headers.
//! - **Selectors** (`handler/http/selector.rs`): every field present must match. `port` is the
//!   original destination port. `path` is a wildcard pattern (`wildmatch` 2: `*` any run of
//!   characters including `/`, `?` exactly one character, no escapes, case-sensitive) matched
//!   against the URI path only (no query). `method` is compared exactly (`get` is not `GET`).
//!   `code` and `response_headers` only count for Response rules. Header selectors: the name
//!   is case-insensitive, the value must equal (case-sensitive, whole field value) *one of* the
//!   header's values when it occurs several times; a comma-joined value is one value.
//! - **Abort** (`action.rs` returns an error from the service): the client connection is closed
//!   without a response.
//! - **Upstream failure**: a request that cannot be forwarded gets `502 Bad Gateway` with an
//!   empty body (`server.rs`).
//!
//! Where faultd deliberately differs (each is a fix of something upstream gets wrong or
//! leaves undefined):
//! - `delay` takes Go's duration syntax (`1.5s`, `300ms`, `2h45m`, `100us`), which the
//!   HTTPChaos webhook validates and documents; upstream's `humantime` rejects fractions. A
//!   negative delay is refused, as upstream refuses it.
//! - `""`/`null` rules mean no rules (upstream fails to unmarshal `""`).
//! - A patched body that is not JSON is forwarded unchanged (upstream drops the connection).
//! - Replace of queries keeps the order and encoding of the parameters it does not touch
//!   (upstream re-encodes the whole query through a hash map: random order, duplicates
//!   collapsed). A replaced key's first occurrence takes the new value, later ones go.
//! - A replace path must be empty (meaning `/`) or start with `/`.
//! - One upstream connection per client connection (upstream opens one per request), so the
//!   app sees the client's connection pattern; when the app closes its side, the client
//!   connection is closed gracefully too. `Upgrade` (WebSocket) requests are tunnelled. Header
//!   case is kept, no `Date` header is added, a client may half-close after its request.
//! - TLS: any PEM key rustls reads (upstream: RSA only); a client that does not start with a
//!   TLS record on a TLS-configured port is served in clear; without `ca_file` the upstream
//!   certificate is not verified (upstream trusts the public web roots, which fails for the
//!   usual private CA); only `"type": "Contents"` files are accepted (a `Path` would be a file
//!   of faultd's own filesystem).
//! - HTTP/1 only: anything else (HTTP/2 prior knowledge, other protocols, a server that speaks
//!   first) is spliced byte for byte.
pub mod action;
pub mod fault;
pub mod proxy;
pub mod route;
pub mod rules;
pub mod selector;
pub mod serve;
pub mod socket;
mod stream;
pub mod tls;

#[cfg(test)]
mod proxy_tests;

use std::net::SocketAddr;

use crate::failure::FailureKind;

pub use proxy::{serve_connection, Connect, ProxyConfig};
pub use rules::{parse_rules, Rule, Target};
pub use tls::{parse_tls, TlsSetup};

/// Everything that goes wrong in HTTPChaos: bad input (rules, TLS) and a proxied connection's
/// failures.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The rules are not a JSON list.
    #[error("rules: {0}")]
    RulesJson(String),
    /// One rule has a bad field (`field` is its path inside the rule: `actions.delay`).
    #[error("rules[{index}].{field}: {reason}")]
    Rule {
        index: usize,
        field: String,
        reason: String,
    },
    /// The TLS configuration is not a JSON object.
    #[error("tls: {0}")]
    TlsJson(String),
    /// One TLS field is bad.
    #[error("tls.{field}: {reason}")]
    Tls { field: String, reason: String },
    #[error("connecting to the original destination {dst}: {source}")]
    Connect {
        dst: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with the client: {0}")]
    ClientTls(#[source] std::io::Error),
    #[error("TLS handshake with the upstream as {name}: {source}")]
    UpstreamTls {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("proxied connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP: {0}")]
    Hyper(#[from] hyper::Error),
    #[error("reading a body: {0}")]
    Body(String),
    /// An abort action: the connection ends without a response.
    #[error("aborted by an HTTPChaos rule")]
    Aborted,
}

crate::impl_failure!(HttpError);

impl HttpError {
    pub fn kind(&self) -> FailureKind {
        match self {
            HttpError::RulesJson(_)
            | HttpError::Rule { .. }
            | HttpError::TlsJson(_)
            | HttpError::Tls { .. } => FailureKind::InvalidArgument,
            HttpError::Connect { .. }
            | HttpError::ClientTls(_)
            | HttpError::UpstreamTls { .. }
            | HttpError::Io(_)
            | HttpError::Hyper(_)
            | HttpError::Body(_)
            | HttpError::Aborted => FailureKind::Unavailable,
        }
    }
}
