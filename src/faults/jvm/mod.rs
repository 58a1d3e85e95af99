//! JVMChaos (`InstallJVMRules`, `UninstallJVMRules`) without a JRE or a shell: faultd loads
//! Byteman's agent into the target JVM through HotSpot's attach protocol itself (`attach.rs`),
//! writes the agent jars into the JVM's root without leaving it (`jars.rs`) and speaks Byteman's
//! listener protocol from a socket in the JVM's network namespace (`byteman.rs`). `fault.rs` is
//! the fault (one installed rule script) and its use cases.
//!
//! Upstream (`pkg/chaosdaemon/jvm_server.go`) runs `bminstall.sh` from a JRE in the daemon's
//! image, copies the jars with `sh -c "cat > …"` (a shell in the application's image), and
//! sends rules to whatever listens on the port (#3041). Here the port is probed with Byteman's
//! `VERSION` first, and a rule whose type check fails is reported instead of answered OK.
pub mod attach;
pub mod byteman;
pub mod fault;
pub mod jars;

use std::path::PathBuf;

use crate::failure::FailureKind;

#[derive(Debug, thiserror::Error)]
pub enum JvmError {
    #[error("JVMChaos rule: {0}")]
    Rule(String),
    #[error("JVMChaos port {0}: not a TCP port (1-65535)")]
    Port(i64),
    #[error("no java process in the container (its init {0} and descendants)")]
    NoJvm(u32),
    #[error("the JVM (pid {0}) is gone")]
    Gone(u32),
    #[error("port {port} in the JVM's network namespace is taken by a listener that is not Byteman (it answered {answer:?}): pick another port for the JVMChaos")]
    PortTaken { port: u16, answer: String },
    #[error("Byteman is already loaded in the JVM (pid {pid}) but does not listen on port {port}: use the port of its first JVMChaos")]
    OtherPort { pid: u32, port: u16 },
    #[error("attaching to the JVM (pid {pid}): {reason}")]
    Attach { pid: u32, reason: String },
    #[error("Byteman's jars in the JVM (pid {pid}): {reason}")]
    Jar { pid: u32, reason: String },
    #[error("faultd's Byteman jars ({dir}): {reason}")]
    Agent { dir: PathBuf, reason: String },
    #[error("Byteman listener on port {port}: {source}")]
    Listener {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("Byteman listener on port {port} answered {reply:?}")]
    Protocol { port: u16, reply: String },
    #[error("Byteman could not use rule {rule:?}: {reason}")]
    Rejected { rule: String, reason: String },
    #[error("the JVM's network namespace: {0}")]
    Namespace(String),
}

crate::impl_failure!(JvmError);

impl JvmError {
    pub fn kind(&self) -> FailureKind {
        match self {
            JvmError::Rule(_) | JvmError::Port(_) | JvmError::Rejected { .. } => {
                FailureKind::InvalidArgument
            }
            JvmError::NoJvm(_) | JvmError::Gone(_) => FailureKind::NotFound,
            JvmError::PortTaken { .. }
            | JvmError::OtherPort { .. }
            | JvmError::Attach { .. }
            | JvmError::Agent { .. } => FailureKind::FailedPrecondition,
            JvmError::Jar { .. }
            | JvmError::Listener { .. }
            | JvmError::Protocol { .. }
            | JvmError::Namespace(_) => FailureKind::Internal,
        }
    }
}

/// Where faultd's image keeps Byteman's jars (`--byteman-dir`): `byteman.jar` (the agent),
/// optionally `byteman-helper.jar` and `chaos-agent.jar` (Chaos Mesh's helpers).
pub fn set_byteman_dir(dir: PathBuf) {
    let _ = BYTEMAN_DIR.set(dir);
}

static BYTEMAN_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

pub fn byteman_dir() -> PathBuf {
    BYTEMAN_DIR
        .get()
        .cloned()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BYTEMAN_DIR))
}

/// The image's Byteman directory (`--byteman-dir`'s default in `config.rs`).
pub const DEFAULT_BYTEMAN_DIR: &str = "/opt/faultd/byteman";

/// Byteman's jars: `(stem, bytes)`, the agent first, then the helper jars that exist.
pub type Jars = std::sync::Arc<Vec<(&'static str, Vec<u8>)>>;

/// The jars of the Byteman directory, read once per process (the install computes their
/// content-addressed paths for the journal and apply writes the same bytes; a failed read is
/// tried again next time).
pub fn read_jars() -> Result<Jars, JvmError> {
    static JARS: std::sync::Mutex<Option<Jars>> = std::sync::Mutex::new(None);
    let mut cached = JARS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(j) = cached.as_ref() {
        return Ok(j.clone());
    }
    let jars = Jars::new(read_dir_jars()?);
    *cached = Some(jars.clone());
    Ok(jars)
}

fn read_dir_jars() -> Result<Vec<(&'static str, Vec<u8>)>, JvmError> {
    let dir = byteman_dir();
    let agent = std::fs::read(dir.join("byteman.jar")).map_err(|e| JvmError::Agent {
        dir: dir.clone(),
        reason: format!("byteman.jar: {e}"),
    })?;
    let mut out = vec![("byteman", agent)];
    for stem in ["byteman-helper", "chaos-agent"] {
        match std::fs::read(dir.join(format!("{stem}.jar"))) {
            Ok(b) => out.push((stem, b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(JvmError::Agent {
                    dir,
                    reason: format!("{stem}.jar: {e}"),
                })
            }
        }
    }
    Ok(out)
}
