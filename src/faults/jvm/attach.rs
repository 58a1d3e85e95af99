//! HotSpot's dynamic attach, spoken natively (what the JDK's attach API does for
//! `bminstall.sh`, without a JRE in faultd's image):
//!
//! 1. the JVM's attach listener is `/tmp/.java_pid<nspid>` in the JVM's root; when it is not
//!    there yet, faultd creates `.attach_pid<nspid>` in the JVM's working directory (else its
//!    `/tmp`), owned by the JVM's user, and sends `SIGQUIT`: HotSpot sees the file and starts the
//!    listener instead of printing a thread dump; the file is removed afterwards;
//! 2. over the socket (the JVM accepts root or its own user): protocol `1`, command `load`,
//!    arguments `instrument`, `false`, `<agent jar>=<options>`, each NUL-terminated;
//! 3. the reply is the command's status (`0`) and `return code: <n>` from the agent: 0 loaded;
//!    anything else (102 when Byteman is already loaded and its listener holds the port) is
//!    checked by the caller against the port.
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::JvmError;

/// How long a JVM may take to start its attach listener after SIGQUIT.
const LISTENER_WAIT: Duration = Duration::from_secs(10);

/// The JVM as the attach needs it.
#[derive(Debug, Clone, Copy)]
pub struct Jvm {
    /// Host pid.
    pub pid: u32,
    /// Its pid in its own pid namespace (the attach files are named after it).
    pub nspid: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Jvm {
    /// Reads pid-namespace pid and effective ids from `/proc/<pid>/status`.
    pub fn of(pid: u32) -> Result<Jvm, JvmError> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|_| JvmError::Gone(pid))?;
        let field = |name: &str| -> Vec<u32> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| {
                    v.split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        let nspid = field("NSpid:").last().copied().unwrap_or(pid);
        let uid = field("Uid:").get(1).copied().unwrap_or(0);
        let gid = field("Gid:").get(1).copied().unwrap_or(0);
        Ok(Jvm {
            pid,
            nspid,
            uid,
            gid,
        })
    }

    fn socket(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/root/tmp/.java_pid{}",
            self.pid, self.nspid
        ))
    }
}

/// The `load` request of protocol 1 for `agent` (a jar path as the JVM sees it) with `options`.
pub fn load_request(agent: &str, options: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for part in [
        "1",
        "load",
        "instrument",
        "false",
        &format!("{agent}={options}"),
    ] {
        out.extend_from_slice(part.as_bytes());
        out.push(0);
    }
    out
}

/// The agent's return code from a `load` reply (`0\nreturn code: N\n`); `Err` with the reply
/// when the command itself failed.
pub fn parse_reply(reply: &str) -> Result<i32, String> {
    let mut lines = reply.lines();
    match lines.next().map(str::trim) {
        Some("0") => {}
        _ => return Err(reply.trim().to_string()),
    }
    let rest: Vec<&str> = lines.collect();
    rest.iter()
        .find_map(|l| l.trim().strip_prefix("return code:"))
        .and_then(|v| v.trim().parse().ok())
        // JDKs before 9 print nothing more on success.
        .map_or(Ok(0), Ok)
}

/// Starts the JVM's attach listener if needed and returns a connection to it.
fn connect(jvm: &Jvm) -> Result<UnixStream, JvmError> {
    let sock = jvm.socket();
    if let Ok(s) = UnixStream::connect(&sock) {
        return Ok(s);
    }
    let name = format!(".attach_pid{}", jvm.nspid);
    let candidates = [
        PathBuf::from(format!("/proc/{}/cwd", jvm.pid)).join(&name),
        PathBuf::from(format!("/proc/{}/root/tmp", jvm.pid)).join(&name),
    ];
    let trigger = candidates
        .iter()
        .find(|p| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(p)
                .is_ok()
        })
        .cloned()
        .ok_or_else(|| JvmError::Attach {
            pid: jvm.pid,
            reason: "cannot create the attach trigger file in its working directory or /tmp".into(),
        })?;
    let _ = nix::unistd::chown(
        &trigger,
        Some(nix::unistd::Uid::from_raw(jvm.uid)),
        Some(nix::unistd::Gid::from_raw(jvm.gid)),
    );
    let result = (|| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(jvm.pid as i32),
            nix::sys::signal::Signal::SIGQUIT,
        )
        .map_err(|_| JvmError::Gone(jvm.pid))?;
        let t0 = Instant::now();
        loop {
            if let Ok(s) = UnixStream::connect(&sock) {
                return Ok(s);
            }
            if t0.elapsed() > LISTENER_WAIT {
                return Err(JvmError::Attach {
                    pid: jvm.pid,
                    reason: format!(
                        "no attach listener ({}) {LISTENER_WAIT:?} after SIGQUIT: not a HotSpot JVM, or attach is disabled (-XX:+DisableAttachMechanism)",
                        sock.display()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })();
    let _ = std::fs::remove_file(&trigger);
    result
}

/// Loads the agent `agent` (a path inside the JVM's root) with `options` into the JVM; returns
/// the agent's return code. Blocking.
pub fn load_agent(jvm: &Jvm, agent: &str, options: &str) -> Result<i32, JvmError> {
    let mut s = connect(jvm)?;
    let io = |e: std::io::Error| JvmError::Attach {
        pid: jvm.pid,
        reason: format!("attach socket: {e}"),
    };
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io)?;
    s.write_all(&load_request(agent, options)).map_err(io)?;
    let mut reply = String::new();
    s.take(64 << 10).read_to_string(&mut reply).map_err(io)?;
    parse_reply(&reply).map_err(|r| JvmError::Attach {
        pid: jvm.pid,
        reason: format!("load instrument answered {r:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_request_is_nul_separated() {
        assert_eq!(
            load_request("/a.jar", "port:1"),
            b"1\0load\0instrument\0false\0/a.jar=port:1\0".to_vec()
        );
    }

    #[test]
    fn replies_give_the_agent_return_code() {
        assert_eq!(parse_reply("0\nreturn code: 0\n"), Ok(0));
        assert_eq!(parse_reply("0\nreturn code: 102\n"), Ok(102));
        assert_eq!(parse_reply("0\n"), Ok(0));
        assert!(parse_reply("101\nAgentLoadException\n").is_err());
        assert!(parse_reply("").is_err());
    }

    #[test]
    fn status_gives_nspid_and_effective_ids() {
        let me = Jvm::of(std::process::id()).unwrap();
        assert_eq!(me.uid, nix::unistd::geteuid().as_raw());
        assert!(me.nspid > 0);
    }
}
