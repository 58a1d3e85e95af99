//! Serving one accepted client connection: [`serve_connection`].
//!
//! The caller (the HTTPChaos use case) owns the listener and the interception; it hands each
//! accepted stream here with the connection's original destination, a [`Connect`]or that
//! opens a stream to that destination, and a `watch` channel of the current [`ProxyConfig`].
//!
//! What happens on a connection:
//! 1. The upstream connection is opened at once (a refused connection closes the client's,
//!    as the app's closed port would have), then whoever talks first decides: the server
//!    (a protocol with a banner) means splice.
//! 2. With TLS configured and a first byte of `0x16` (a TLS handshake record), TLS is
//!    terminated with the configured certificate and re-established towards the app (server
//!    name: the client's SNI, else the destination IP, IPv4-mapped addresses as IPv4); the rest
//!    runs on the two TLS streams.
//!    Without that first byte the connection is served in clear.
//! 3. The client's first line is sniffed: an HTTP/1.0 or 1.1 request line means HTTP, served by
//!    hyper with keep-alive over the one upstream connection; anything else is spliced byte
//!    for byte.
//! 4. For every request, the rules are read from the channel afresh (a swap applies to the
//!    next request, also on kept-alive connections) and applied as `super` documents: the
//!    matching Request rules, the forward (`502` with an empty body if it fails), the matching
//!    Response rules. An abort closes the client connection without a response. A `101`
//!    (or a successful `CONNECT`) turns the connection into a tunnel.
//! 5. When the app closes its connection, the client's is closed once the response in flight
//!    is done; a request that finds the upstream connection gone before it was sent is sent on
//!    a new one.
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Mutex, Notify};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::action::{apply_request, apply_response, full, Body, BoxError};
use super::rules::{parse_rules, Rule, Target};
use super::selector::RequestView;
use super::stream::{first_bytes, sniff, splice, BoxIo, First, Prefixed, Sniff, SNIFF_LIMIT};
use super::tls::{parse_tls, TlsSetup};
use super::HttpError;

/// What the proxy of one pod applies: swapped as a whole through a `watch` channel.
#[derive(Debug, Clone, Default)]
pub struct ProxyConfig {
    pub rules: Vec<Rule>,
    /// TLS termination; read when a connection is accepted.
    pub tls: Option<TlsSetup>,
}

impl ProxyConfig {
    /// Parses and validates `ApplyHttpChaosRequest.rules` and `.tls`. Every error is bad input
    /// (`FailureKind::InvalidArgument`), with the rule and field in its message.
    pub fn parse(rules: &str, tls: &str) -> Result<ProxyConfig, HttpError> {
        Ok(ProxyConfig {
            rules: parse_rules(rules)?,
            tls: parse_tls(tls)?,
        })
    }
}

/// Opens a stream to the connection's original destination (in faultd: a socket in the pod's
/// network namespace). Closures `Fn() -> impl Future<Output = io::Result<S>>` are connectors.
pub trait Connect: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn connect(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl<F, Fut, S> Connect for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<S>> + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = S;
    fn connect(&self) -> impl Future<Output = io::Result<S>> + Send {
        self()
    }
}

/// Opens a new upstream stream (plain or TLS) for a request that finds the old one gone.
type Dial = Arc<dyn Fn() -> BoxFuture<'static, Result<BoxIo, HttpError>> + Send + Sync>;

/// Serves one accepted client connection until both sides are done. `dst` is the original
/// destination (its port is what `selector.port` matches; its IP names the app for TLS when
/// the client sent no SNI). An abort ends it with `Ok`.
pub async fn serve_connection<C, K>(
    mut client: C,
    dst: SocketAddr,
    connector: K,
    config: watch::Receiver<Arc<ProxyConfig>>,
) -> Result<(), HttpError>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    K: Connect,
{
    let tls = config.borrow().tls.clone();
    let connector = Arc::new(connector);
    let mut upstream = connector
        .connect()
        .await
        .map_err(|source| HttpError::Connect { dst, source })?;
    let (mut cbuf, mut ubuf) = (BytesMut::with_capacity(4096), BytesMut::new());
    match first_bytes(&mut client, &mut cbuf, &mut upstream, &mut ubuf).await? {
        First::ClientEof => {
            let _ = upstream.shutdown().await;
            return Ok(());
        }
        First::Upstream => return Ok(splice(client, &cbuf, upstream, &ubuf).await?),
        First::Client => {}
    }
    let plain: Dial = Arc::new(move || {
        let k = connector.clone();
        Box::pin(async move {
            match k.connect().await {
                Ok(s) => Ok(Box::new(s) as BoxIo),
                Err(source) => Err(HttpError::Connect { dst, source }),
            }
        })
    });
    match tls {
        Some(tls) if cbuf.first() == Some(&0x16) => {
            let client = TlsAcceptor::from(tls.server.clone())
                .accept(Prefixed::new(cbuf.freeze(), client))
                .await
                .map_err(HttpError::ClientTls)?;
            let name = client
                .get_ref()
                .1
                .server_name()
                .and_then(|sni| ServerName::try_from(sni.to_string()).ok())
                // A dual-stack listener sees IPv4 clients as `::ffff:a.b.c.d`.
                .unwrap_or_else(|| ServerName::IpAddress(dst.ip().to_canonical().into()));
            let connector = TlsConnector::from(tls.client.clone());
            let upstream = tls_connect(&connector, &name, Box::new(upstream)).await?;
            let dial: Dial = Arc::new(move || {
                let (plain, connector, name) = (plain.clone(), connector.clone(), name.clone());
                Box::pin(async move { tls_connect(&connector, &name, plain().await?).await })
            });
            serve_decided(
                Box::new(client),
                BytesMut::new(),
                upstream,
                dial,
                dst,
                config,
            )
            .await
        }
        _ => {
            serve_decided(
                Box::new(client),
                cbuf,
                Box::new(upstream),
                plain,
                dst,
                config,
            )
            .await
        }
    }
}

async fn tls_connect(
    connector: &TlsConnector,
    name: &ServerName<'static>,
    io: BoxIo,
) -> Result<BoxIo, HttpError> {
    match connector.connect(name.clone(), io).await {
        Ok(s) => Ok(Box::new(s)),
        Err(source) => Err(HttpError::UpstreamTls {
            name: name.to_str().into_owned(),
            source,
        }),
    }
}

/// Sniffs the client's first line (after TLS, if any) and serves HTTP/1 or splices.
async fn serve_decided(
    mut client: BoxIo,
    mut cbuf: BytesMut,
    mut upstream: BoxIo,
    dial: Dial,
    dst: SocketAddr,
    config: watch::Receiver<Arc<ProxyConfig>>,
) -> Result<(), HttpError> {
    if cbuf.is_empty() {
        let mut ubuf = BytesMut::new();
        match first_bytes(&mut client, &mut cbuf, &mut upstream, &mut ubuf).await? {
            First::ClientEof => {
                let _ = upstream.shutdown().await;
                return Ok(());
            }
            First::Upstream => return Ok(splice(client, &cbuf, upstream, &ubuf).await?),
            First::Client => {}
        }
    }
    loop {
        match sniff(&cbuf) {
            Sniff::Http => break,
            Sniff::More if cbuf.len() < SNIFF_LIMIT => {
                if tokio::io::AsyncReadExt::read_buf(&mut client, &mut cbuf).await? == 0 {
                    return Ok(splice(client, &cbuf, upstream, &[]).await?);
                }
            }
            Sniff::More | Sniff::NotHttp => return Ok(splice(client, &cbuf, upstream, &[]).await?),
        }
    }
    let client = Prefixed::new(cbuf.freeze(), client);
    serve_http(client, upstream, dial, dst, config).await
}

/// One HTTP/1 connection's shared state.
struct Conn {
    dst: SocketAddr,
    config: watch::Receiver<Arc<ProxyConfig>>,
    dial: Dial,
    /// The upstream connection (requests of one HTTP/1 connection are sequential).
    sender: Mutex<Option<SendRequest<Body>>>,
    /// Signalled when an upstream connection ends.
    gone: Arc<Notify>,
}

async fn serve_http(
    client: Prefixed<BoxIo>,
    upstream: BoxIo,
    dial: Dial,
    dst: SocketAddr,
    config: watch::Receiver<Arc<ProxyConfig>>,
) -> Result<(), HttpError> {
    let gone = Arc::new(Notify::new());
    let sender = handshake(upstream, gone.clone()).await?;
    let conn = Arc::new(Conn {
        dst,
        config,
        dial,
        sender: Mutex::new(Some(sender)),
        gone: gone.clone(),
    });
    let service = service_fn(move |req| handle(conn.clone(), req));
    let served = hyper::server::conn::http1::Builder::new()
        .preserve_header_case(true)
        .half_close(true)
        .auto_date_header(false)
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(client), service)
        .with_upgrades();
    tokio::pin!(served);
    let result = tokio::select! {
        r = served.as_mut() => r,
        _ = gone.notified() => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if is_abort(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn is_abort(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if matches!(s.downcast_ref::<HttpError>(), Some(HttpError::Aborted)) {
            return true;
        }
        source = s.source();
    }
    false
}

/// An HTTP/1 client connection on `io`, driven by its own task.
async fn handshake(io: BoxIo, gone: Arc<Notify>) -> Result<SendRequest<Body>, HttpError> {
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .preserve_header_case(true)
        .handshake(TokioIo::new(io))
        .await?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "HTTPChaos upstream connection ended");
        }
        gone.notify_one();
    });
    Ok(sender)
}

impl Conn {
    /// Sends a request upstream, on a new connection if the current one is gone before the
    /// request could be sent.
    async fn send(&self, mut req: Request<Body>) -> Result<Response<Incoming>, HttpError> {
        let mut slot = self.sender.lock().await;
        let mut fresh = false;
        loop {
            let current = match slot.take() {
                Some(mut s) => s.ready().await.is_ok().then_some(s),
                None => None,
            };
            let mut sender = match current {
                Some(s) => s,
                None => {
                    fresh = true;
                    handshake((self.dial)().await?, self.gone.clone()).await?
                }
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    *slot = Some(sender);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if !fresh => req = unsent,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }
}

fn boxed(b: Incoming) -> Body {
    b.map_err(|e| Box::new(e) as BoxError).boxed_unsync()
}

async fn handle(conn: Arc<Conn>, req: Request<Incoming>) -> Result<Response<Body>, HttpError> {
    let config = conn.config.borrow().clone();
    let port = conn.dst.port();
    let mut req = req.map(boxed);
    let tunnel =
        req.method() == Method::CONNECT || req.headers().contains_key(http::header::UPGRADE);
    let client_upgrade = tunnel.then(|| hyper::upgrade::on(&mut req));

    let chosen: Vec<&Rule> = config
        .rules
        .iter()
        .filter(|r| {
            r.target == Target::Request
                && r.selector.matches_request(RequestView {
                    port,
                    method: req.method(),
                    path: req.uri().path(),
                    headers: req.headers(),
                })
        })
        .collect();
    for rule in chosen {
        req = apply_request(req, &rule.actions).await?;
    }

    let responders: Vec<&Rule> = config
        .rules
        .iter()
        .filter(|r| r.target == Target::Response)
        .collect();
    let forwarded = (!responders.is_empty()).then(|| {
        (
            req.method().clone(),
            req.uri().path().to_string(),
            req.headers().clone(),
        )
    });
    let is_connect = req.method() == Method::CONNECT;
    let mut resp = match conn.send(req).await {
        Ok(resp) => resp.map(boxed),
        Err(e) => {
            tracing::debug!(dst = %conn.dst, error = %e, "HTTPChaos: forwarding failed");
            let mut bad = Response::new(full(""));
            *bad.status_mut() = StatusCode::BAD_GATEWAY;
            bad
        }
    };

    if let Some((method, path, headers)) = &forwarded {
        let seen = RequestView {
            port,
            method,
            path,
            headers,
        };
        let chosen: Vec<&Rule> = responders
            .into_iter()
            .filter(|r| {
                r.selector
                    .matches_response(seen, resp.status(), resp.headers())
            })
            .collect();
        for rule in chosen {
            resp = apply_response(resp, &rule.actions).await?;
        }
    }

    let upgraded = resp.status() == StatusCode::SWITCHING_PROTOCOLS
        || (is_connect && resp.status().is_success());
    if let (true, Some(client_side)) = (upgraded, client_upgrade) {
        let app_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            if let (Ok(c), Ok(a)) = tokio::join!(client_side, app_side) {
                let (mut c, mut a) = (TokioIo::new(c), TokioIo::new(a));
                let _ = tokio::io::copy_bidirectional(&mut c, &mut a).await;
            }
        });
    }
    Ok(resp)
}
