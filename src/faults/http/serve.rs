//! The running proxies: one per pod network namespace, owned by the HTTPChaos fault currently
//! in force there. An update swaps the configuration (the listener, its port and the
//! connections in flight stay); the fault that replaced another takes over the proxy, so the
//! replaced fault's undo leaves it running. Nothing here survives faultd: after a restart the
//! listener is gone, the interception fails open, and reconciliation deletes the table.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::proxy::{serve_connection, ProxyConfig};
use super::socket;
use crate::ns::{Namespace, NsId};

struct Server {
    /// The token of the fault in force.
    owner: String,
    port: u16,
    config: watch::Sender<Arc<ProxyConfig>>,
    task: tokio::task::JoinHandle<()>,
    /// The proxied connections: closed with the proxy, so none outlives the interception
    /// (their replies would no longer be routed back to it).
    conns: Arc<Mutex<tokio::task::JoinSet<()>>>,
}

fn servers() -> MutexGuard<'static, HashMap<NsId, Server>> {
    static SERVERS: std::sync::OnceLock<Mutex<HashMap<NsId, Server>>> = std::sync::OnceLock::new();
    SERVERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Configurations staged by the use case for the fault that will own them (keyed by token):
/// the journal never holds TLS keys, so `apply` takes the parsed configuration from here.
fn staged() -> MutexGuard<'static, HashMap<String, ProxyConfig>> {
    static STAGED: std::sync::OnceLock<Mutex<HashMap<String, ProxyConfig>>> =
        std::sync::OnceLock::new();
    STAGED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

pub fn stage(token: &str, config: ProxyConfig) {
    staged().insert(token.to_string(), config);
}

pub fn unstage(token: &str) -> Option<ProxyConfig> {
    staged().remove(token)
}

/// The port of the proxy serving `ns`, if one runs.
pub fn port_of(ns: NsId) -> Option<u16> {
    servers().get(&ns).map(|s| s.port)
}

/// The port a new fault in `ns` will use: the running proxy's, or a new listener's (started
/// with no rules and no owner: it passes every connection through until a fault takes it
/// over). A listener only receives what the interception table sends it.
pub async fn prepare(ns: &Namespace) -> std::io::Result<u16> {
    if let Some(p) = port_of(ns.id()) {
        return Ok(p);
    }
    let (std, port) = socket::transparent_listener(ns).await?;
    let listener = tokio::net::TcpListener::from_std(std)?;
    let (tx, rx) = watch::channel(Arc::new(ProxyConfig::default()));
    let ns = Arc::new(ns.try_clone()?);
    let conns = Arc::new(Mutex::new(tokio::task::JoinSet::new()));
    let task = tokio::spawn(accept_loop(listener, ns.clone(), rx, conns.clone()));
    let mut all = servers();
    if let Some(s) = all.get(&ns.id()) {
        // Raced with another preparation of the same namespace (not under one group lock).
        task.abort();
        return Ok(s.port);
    }
    all.insert(
        ns.id(),
        Server {
            owner: String::new(),
            port,
            config: tx,
            task,
            conns,
        },
    );
    Ok(port)
}

/// Gives the proxy of `ns` to fault `owner` with `config`; false if no proxy runs there or it
/// listens on another port than the fault recorded.
pub fn activate(ns: NsId, port: u16, owner: &str, config: ProxyConfig) -> bool {
    let mut all = servers();
    match all.get_mut(&ns) {
        Some(s) if s.port == port => {
            s.owner = owner.to_string();
            s.config.send_replace(Arc::new(config));
            true
        }
        _ => false,
    }
}

/// Whether fault `owner` holds the proxy of `ns`.
pub fn owned_by(ns: NsId, owner: &str) -> bool {
    servers().get(&ns).is_some_and(|s| s.owner == owner)
}

/// Stops the proxy of `ns` if fault `owner` holds it (or nobody does): closes the listener;
/// connections in flight end with their clients.
pub fn stop(ns: NsId, owner: &str) {
    let mut all = servers();
    if all
        .get(&ns)
        .is_some_and(|s| s.owner == owner || s.owner.is_empty())
    {
        if let Some(s) = all.remove(&ns) {
            s.task.abort();
            s.conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .abort_all();
        }
    }
}

/// The original destination of an accepted connection (its local address; an IPv4 client on
/// the dual-stack listener shows as a v4-mapped address).
fn original_destination(local: SocketAddr) -> SocketAddr {
    match local {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => local,
        },
        v4 => v4,
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    ns: Arc<Namespace>,
    config: watch::Receiver<Arc<ProxyConfig>>,
    conns: Arc<Mutex<tokio::task::JoinSet<()>>>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "HTTPChaos: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let dst = original_destination(local);
        let client = original_destination(peer);
        let ns = ns.clone();
        let connector = move || {
            let ns = ns.clone();
            async move { socket::connect_upstream(&ns, dst, Some((client, super::route::MARK))).await }
        };
        let config = config.clone();
        let mut set = conns.lock().unwrap_or_else(|p| p.into_inner());
        // Reap finished connections so the set stays the size of the live ones.
        while set.try_join_next().is_some() {}
        set.spawn(async move {
            if let Err(e) = serve_connection(stream, dst, connector, config).await {
                tracing::debug!(%peer, %dst, error = %e, "HTTPChaos: proxied connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_mapped_destinations_are_ipv4() {
        let d: SocketAddr = "[::ffff:10.1.2.3]:80".parse().unwrap();
        assert_eq!(original_destination(d), "10.1.2.3:80".parse().unwrap());
        let d6: SocketAddr = "[fd00::1]:8080".parse().unwrap();
        assert_eq!(original_destination(d6), d6);
    }
}
