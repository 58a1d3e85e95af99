//! Byteman's agent listener, spoken natively (what `bmsubmit.sh` does with a JRE): one TCP
//! connection per command to `127.0.0.1:<port>` from a socket made in the JVM's network
//! namespace; the command's lines go out, the reply is read to its last line, `OK`.
//!
//! | Command | Sent | Reply |
//! |---|---|---|
//! | version | `VERSION` | the agent's version, `OK` |
//! | load | `LOAD`, `SCRIPT <name>`, the rule text, `ENDSCRIPT`, `ENDLOAD` | `install rule <r>` per rule, `OK` |
//! | delete | `DELETE`, the same script, `ENDDELETE` | `uninstall RULE <r>` per rule, `OK` |
//! | list | `LIST` | every rule with where it was transformed and how that went, `OK` |
//! | boot | `BOOT`, a jar path, `ENDBOOT` | `OK` (the jar joins the boot class path) |
//!
//! Byteman answers `OK` to a `LOAD` even for a rule that fails its type check; the failure shows
//! in `LIST` (`failed to compile` under the rule) once the rule was triggered, which is what
//! [`failed_rules`] finds.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::ns::Namespace;

use super::JvmError;

/// How long a listener may take to connect and answer one command.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a listener that is not Byteman gets to say so (it may never answer at all).
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// What is on a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortState {
    /// Nothing listens.
    Free,
    /// Byteman's listener, with its version.
    Byteman(String),
    /// Something else (what it answered, possibly nothing).
    Other(String),
}

/// A Byteman listener on `port` of the network namespace `net`.
pub struct Listener<'a> {
    pub net: &'a Namespace,
    pub port: u16,
}

impl Listener<'_> {
    fn connect(&self, timeout: Duration) -> Result<Option<TcpStream>, JvmError> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let port = self.port;
        let r = self
            .net
            .run(move || TcpStream::connect_timeout(&addr, timeout))
            .map_err(|e| JvmError::Namespace(e.to_string()))?;
        match r {
            Ok(s) => {
                let _ = s.set_read_timeout(Some(timeout));
                let _ = s.set_write_timeout(Some(timeout));
                Ok(Some(s))
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(None),
            Err(e) => Err(JvmError::Listener { port, source: e }),
        }
    }

    /// Sends `text` and reads the reply up to the final `OK` (the connection is closed after).
    pub fn command(&self, text: &str) -> Result<Option<String>, JvmError> {
        let Some(mut s) = self.connect(IO_TIMEOUT)? else {
            return Ok(None);
        };
        let io = |e| JvmError::Listener {
            port: self.port,
            source: e,
        };
        s.write_all(text.as_bytes()).map_err(io)?;
        s.flush().map_err(io)?;
        let mut reply = String::new();
        BufReader::new(&mut s)
            .take(16 << 20)
            .read_to_string(&mut reply)
            .map_err(io)?;
        if reply.trim_end().lines().last().map(str::trim) != Some("OK") {
            return Err(JvmError::Protocol {
                port: self.port,
                reply: excerpt(&reply),
            });
        }
        Ok(Some(reply))
    }

    /// What listens on the port: nothing, Byteman, or something else (never sent anything but
    /// `VERSION`).
    pub fn probe(&self) -> Result<PortState, JvmError> {
        let Some(mut s) = self.connect(PROBE_TIMEOUT)? else {
            return Ok(PortState::Free);
        };
        let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
        if s.write_all(b"VERSION\n").is_err() {
            return Ok(PortState::Other(String::new()));
        }
        let mut lines = Vec::new();
        let mut r = BufReader::new(&mut s);
        for _ in 0..4 {
            let mut l = String::new();
            match r.read_line(&mut l) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let l = l.trim().to_string();
                    let done = l == "OK";
                    lines.push(l);
                    if done {
                        break;
                    }
                }
            }
        }
        Ok(match lines.as_slice() {
            [v, ok] if ok == "OK" && looks_like_version(v) => PortState::Byteman(v.clone()),
            _ => PortState::Other(excerpt(&lines.join("\n"))),
        })
    }

    pub fn load(&self, script: &str, text: &str) -> Result<Option<String>, JvmError> {
        self.command(&format!(
            "LOAD\nSCRIPT {script}\n{}\nENDSCRIPT\nENDLOAD\n",
            text.trim_end()
        ))
    }

    pub fn delete(&self, script: &str, text: &str) -> Result<Option<String>, JvmError> {
        self.command(&format!(
            "DELETE\nSCRIPT {script}\n{}\nENDSCRIPT\nENDDELETE\n",
            text.trim_end()
        ))
    }

    pub fn list(&self) -> Result<Option<String>, JvmError> {
        self.command("LIST\n")
    }

    pub fn boot(&self, jar: &str) -> Result<Option<String>, JvmError> {
        self.command(&format!("BOOT\n{jar}\nENDBOOT\n"))
    }
}

fn looks_like_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.chars().next().is_some_and(|c| c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

fn excerpt(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The names of a script's rules (`RULE <name>` lines), in order.
pub fn rule_names(script: &str) -> Vec<String> {
    script
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("RULE")?;
            (rest.starts_with([' ', '\t'])).then(|| rest.trim().to_string())
        })
        .filter(|n| !n.is_empty())
        .collect()
}

/// The sections of a `LIST` reply, by rule name (a section runs from its `RULE` line to the
/// next rule's `# File` line).
fn sections(list: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for l in list.lines() {
        let t = l.trim();
        if t.starts_with("# File ") {
            out.push((String::new(), String::new()));
        }
        if let Some(name) = t
            .strip_prefix("RULE ")
            .map(str::trim)
            .filter(|_| out.last().is_some_and(|(n, _)| n.is_empty()))
        {
            if let Some(last) = out.last_mut() {
                last.0 = name.to_string();
            }
        }
        if let Some(last) = out.last_mut() {
            last.1.push_str(l);
            last.1.push('\n');
        }
    }
    out.retain(|(n, _)| !n.is_empty());
    out
}

/// Which of `names` a `LIST` reply shows.
pub fn listed(list: &str, names: &[String]) -> Vec<String> {
    let present: Vec<String> = sections(list).into_iter().map(|(n, _)| n).collect();
    names
        .iter()
        .filter(|n| present.contains(n))
        .cloned()
        .collect()
}

/// The rules of `names` whose transform failed (type check, compile, or a thrown error), with
/// Byteman's first error line.
pub fn failed_rules(list: &str, names: &[String]) -> Vec<(String, String)> {
    sections(list)
        .into_iter()
        .filter(|(n, _)| names.contains(n))
        .filter_map(|(n, body)| {
            let mut lines = body.lines().map(str::trim);
            lines.find(|l| *l == "failed to compile" || l.starts_with("threw "))?;
            let rest: Vec<&str> = lines.take_while(|l| *l != "OK").collect();
            let why = rest
                .iter()
                .find(|l| l.contains("Exception:"))
                .or_else(|| rest.iter().find(|l| l.contains("error")))
                .copied()
                .unwrap_or("failed to compile")
                .to_string();
            Some((n, why))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "# File bad line 5\nRULE bad\nCLASS T\nMETHOD work\nNOCOMPILE\nAT ENTRY\nIF true\nDO\nthrow new java.io.IOException(\"x\");\nENDRULE\nTransformed in:\nloader: jdk.internal.loader.ClassLoaders$AppClassLoader@30946e09\ntrigger method: T.work() int\nfailed to compile\nRule.ensureTypeCheckedCompiled : error type checking rule bad\norg.jboss.byteman.rule.exception.TypeException: ThrowExpression.typeCheck : exception type not declared by trigger method java.io.IOException file bad line 7\n\tat org.jboss.byteman.rule.expression.ThrowExpression.checkThrownTypeIsValid(ThrowExpression.java:426)\n# File good line 1\nRULE good one\nCLASS T\nMETHOD work\nAT ENTRY\nIF true\nDO\nThread.sleep(1L);\nENDRULE\nTransformed in:\nloader: x\ntrigger method: T.work() int\ncompiled successfully\nOK\n";

    #[test]
    fn rule_names_are_the_rule_lines() {
        let s = "RULE delay a\nCLASS X\nENDRULE\n\nRULE\tsecond\nRULEX no\n  RULE  third  \n";
        assert_eq!(rule_names(s), vec!["delay a", "second", "third"]);
        assert!(rule_names("CLASS X").is_empty());
    }

    #[test]
    fn list_replies_give_present_and_failed_rules() {
        let names = vec!["bad".to_string(), "good one".into(), "absent".into()];
        assert_eq!(listed(LIST, &names), vec!["bad", "good one"]);
        let failed = failed_rules(LIST, &names);
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].0, "bad");
        assert!(
            failed[0].1.contains("exception type not declared"),
            "{failed:?}"
        );
        assert!(listed("OK\n", &names).is_empty());
    }

    #[test]
    fn versions_look_like_versions() {
        assert!(looks_like_version("4.0.20"));
        assert!(looks_like_version("4.0.24-SNAPSHOT"));
        assert!(!looks_like_version("HTTP/1.1 400 Bad Request"));
        assert!(!looks_like_version(""));
    }
}
