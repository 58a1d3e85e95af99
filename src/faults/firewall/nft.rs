//! Running the `nft` program inside a network namespace, and reading the table back.
//!
//! The argv is always one of the fixed lists below (`nft -f -` with the batch on stdin, or a
//! fixed `list` command): no request value ever reaches an argv, and nothing goes through a
//! shell. The child enters the namespace itself between fork and exec (`pre_exec` + `setns`):
//! the forked child is single-threaded, so entering a network namespace there is always
//! allowed, and no thread of faultd ever changes namespace for it.
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::render::{FAMILY, OWNER_PREFIX, TABLE};
use super::FirewallError;
use crate::ns::Namespace;

/// Where the Debian package (and other distributions) install nft.
const NFT_PATHS: [&str; 5] = [
    "/usr/sbin/nft",
    "/sbin/nft",
    "/usr/bin/nft",
    "/bin/nft",
    "/usr/local/sbin/nft",
];
/// No nft call takes long; one that hangs is killed.
const TIMEOUT: Duration = Duration::from_secs(30);
/// How much of nft's stderr an error carries.
const MAX_STDERR: usize = 2000;

/// The only argvs faultd runs.
pub const ARGV_BATCH: &[&str] = &["-f", "-"];
pub const ARGV_LIST_TABLES: &[&str] = &["-j", "list", "tables"];
pub const ARGV_LIST_TABLE: &[&str] = &["-j", "list", "table", "inet", "faultd"];

/// The nft program faultd runs, if installed.
pub fn program() -> Option<&'static str> {
    NFT_PATHS.into_iter().find(|p| Path::new(p).exists())
}

/// An fd on the namespace, opened from a thread that entered it (the namespace handle keeps
/// its own fd private), checked to be the same namespace.
async fn namespace_fd(ns: &Namespace) -> Result<File, FirewallError> {
    let file = ns
        .run_async(|| File::open("/proc/thread-self/ns/net"))
        .await
        .map_err(|e| FirewallError::Namespace(e.to_string()))?
        .map_err(|e| FirewallError::Namespace(format!("opening the namespace: {e}")))?;
    let md = file
        .metadata()
        .map_err(|e| FirewallError::Namespace(format!("reading the namespace: {e}")))?;
    if (md.dev(), md.ino()) != (ns.id().dev, ns.id().ino) {
        return Err(FirewallError::Namespace(
            "the namespace fd does not match the target namespace".into(),
        ));
    }
    Ok(file)
}

/// Runs nft with one of the fixed argvs in network namespace `ns`; returns its stdout.
pub async fn run(
    ns: &Namespace,
    argv: &'static [&'static str],
    stdin: Option<&str>,
) -> Result<String, FirewallError> {
    let op = argv.join(" ");
    let program = program().ok_or(FirewallError::NftMissing)?;
    let netns = namespace_fd(ns).await?;
    let fd = netns.as_raw_fd();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(argv)
        .env_clear()
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: the closure runs in the forked child before exec. It only calls setns(2), which is
    // async-signal-safe, and builds an io::Error from errno, which does not allocate. `fd` stays
    // open in the child: `netns` lives until after `spawn` returns, and O_CLOEXEC closes it at
    // exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            FirewallError::NftMissing
        } else {
            FirewallError::Io {
                op: op.clone(),
                message: e.to_string(),
            }
        }
    })?;
    drop(netns);
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let written = pipe.write_all(text.as_bytes()).await;
        drop(pipe);
        if let Err(e) = written {
            return Err(FirewallError::Io {
                op,
                message: format!("writing the batch: {e}"),
            });
        }
    }
    let out = match tokio::time::timeout(TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            return Err(FirewallError::Io {
                op,
                message: e.to_string(),
            })
        }
        Err(_) => return Err(FirewallError::Timeout { op }),
    };
    if !out.status.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if stderr.len() > MAX_STDERR {
            let mut cut = MAX_STDERR;
            while !stderr.is_char_boundary(cut) {
                cut -= 1;
            }
            stderr.truncate(cut);
            stderr.push('…');
        }
        return Err(FirewallError::Nft {
            op,
            status: out.status.to_string(),
            stderr,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What `nft -j list table inet faultd` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Fault ids of the owner marker chains (one when faultd wrote the table).
    pub owners: Vec<String>,
    pub sets: BTreeSet<String>,
    /// Chain name → number of rules.
    pub chains: BTreeMap<String, usize>,
}

impl Listing {
    /// The fault that wrote the table, if exactly one marker is there.
    pub fn owner(&self) -> Option<&str> {
        match self.owners.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

/// Whether faultd's table exists in a namespace, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableState {
    Absent,
    Present(Listing),
}

fn parse_json(op: &str, text: &str) -> Result<Vec<serde_json::Value>, FirewallError> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| FirewallError::ReadBack(format!("{op}: not JSON: {e}")))?;
    match v.get("nftables").and_then(|n| n.as_array()) {
        Some(items) => Ok(items.clone()),
        None => Err(FirewallError::ReadBack(format!(
            "{op}: no \"nftables\" array"
        ))),
    }
}

fn is_ours(obj: &serde_json::Value, table_key: &str) -> bool {
    obj.get("family").and_then(|f| f.as_str()) == Some(FAMILY)
        && obj.get(table_key).and_then(|t| t.as_str()) == Some(TABLE)
}

/// Parses `nft -j list tables`: whether `inet faultd` is among them.
pub fn parse_tables(text: &str) -> Result<bool, FirewallError> {
    Ok(parse_json("list tables", text)?
        .iter()
        .filter_map(|i| i.get("table"))
        .any(|t| is_ours(t, "name")))
}

/// Parses `nft -j list table inet faultd`.
pub fn parse_table(text: &str) -> Result<Listing, FirewallError> {
    let mut l = Listing::default();
    for item in parse_json("list table", text)? {
        if let Some(c) = item.get("chain").filter(|c| is_ours(c, "table")) {
            if let Some(name) = c.get("name").and_then(|n| n.as_str()) {
                l.chains.entry(name.to_string()).or_insert(0);
                if let Some(id) = name.strip_prefix(OWNER_PREFIX) {
                    l.owners.push(id.to_string());
                }
            }
        } else if let Some(s) = item.get("set").filter(|s| is_ours(s, "table")) {
            if let Some(name) = s.get("name").and_then(|n| n.as_str()) {
                l.sets.insert(name.to_string());
            }
        } else if let Some(r) = item.get("rule").filter(|r| is_ours(r, "table")) {
            if let Some(chain) = r.get("chain").and_then(|n| n.as_str()) {
                *l.chains.entry(chain.to_string()).or_insert(0) += 1;
            }
        }
    }
    Ok(l)
}

/// Reads faultd's table in `ns`.
pub async fn table_state(ns: &Namespace) -> Result<TableState, FirewallError> {
    if !parse_tables(&run(ns, ARGV_LIST_TABLES, None).await?)? {
        return Ok(TableState::Absent);
    }
    match run(ns, ARGV_LIST_TABLE, None).await {
        Ok(text) => Ok(TableState::Present(parse_table(&text)?)),
        // Deleted between the two calls.
        Err(FirewallError::Nft { stderr, .. }) if stderr.contains("No such file or directory") => {
            Ok(TableState::Absent)
        }
        Err(e) => Err(e),
    }
}
