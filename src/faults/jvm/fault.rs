//! One JVMChaos rule script installed in a JVM: the fault record's effect, and the use cases
//! `InstallJVMRules` (add a script; the same script again is the same fault) and
//! `UninstallJVMRules` (delete it; a script or a container that is not there is success, as the
//! controller expects).
//!
//! Apply: the port is probed first (Byteman's `VERSION`; anything else listening is refused),
//! the jars are written into the JVM's `/tmp/.faultd-byteman/`, the agent is loaded through
//! HotSpot's attach (skipped when Byteman already listens there), Chaos Mesh's helper jars are
//! added to the boot class path, the script is loaded, and `LIST` is read until every rule
//! compiled or one failed (a failed one is deleted again and reported). Undo: `DELETE` of the
//! script, checked with `LIST`. Byteman's agent stays loaded in the JVM (a JVM cannot unload an
//! agent; upstream leaves it too): its listener keeps the port, with no rules.
//!
//! `Boot` durable (all of it lives in the JVM), `Process` scoped (gone with the JVM).
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::attach::{self, Jvm};
use super::byteman::{self, Listener, PortState};
use super::{jars, JvmError};
use crate::engine::{
    blocking, Durability, Effect, EffectCtx, EffectError, EndReason, Engine, EngineError,
    FailureKind, FaultMeta, FaultRecord, Holds, Scope, TargetIdentity,
};
use crate::faults::target::{Target, TargetError};
use crate::ns::{Namespace, NsId, NsKind};
use crate::process::ProcessIdentity;
use crate::runtime::Runtimes;

/// How long after loading a script faultd watches `LIST` for a rule that failed to compile.
const CHECK_WINDOW: Duration = Duration::from_millis(1000);

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Jvm(#[from] JvmError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl ApplyError {
    pub fn kind(&self) -> FailureKind {
        use crate::failure::Failure;
        match self {
            ApplyError::Jvm(e) => e.kind(),
            ApplyError::Target(e) => e.failure(),
            ApplyError::Engine(e) => e.kind(),
        }
    }
}

crate::impl_failure!(ApplyError);

/// A Byteman rule script in a JVM: the fault record's effect.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JvmFault {
    pub container: String,
    pub jvm: ProcessIdentity,
    /// The JVM's network namespace (where its listener is reached).
    pub netns: NsId,
    pub port: u16,
    /// The script's name in Byteman (`faultd-<hash of the text>`).
    pub script: String,
    pub rule: String,
    /// Its `RULE` names.
    pub names: Vec<String>,
    /// The jars as the JVM sees them: the agent, then the helper jars.
    pub jars: Vec<String>,
}

impl JvmFault {
    /// The JVM's network namespace, while the JVM lives.
    fn net(&self) -> Option<Namespace> {
        if !self.jvm.is_alive() {
            return None;
        }
        Namespace::of_pid(self.jvm.pid, NsKind::Net)
            .ok()
            .filter(|n| n.id() == self.netns)
    }
}

/// Byteman's agent options as `bminstall.sh -b -p <port> -Dorg.jboss.byteman.transform.all`
/// gives them.
fn agent_options(agent: &str, port: u16) -> String {
    format!("listener:true,port:{port},boot:{agent},prop:org.jboss.byteman.transform.all=true")
}

/// The blocking part of apply.
fn install(f: &JvmFault, jar_bytes: super::Jars) -> Result<(), JvmError> {
    let net = Namespace::of_pid(f.jvm.pid, NsKind::Net).map_err(|_| JvmError::Gone(f.jvm.pid))?;
    let l = Listener {
        net: &net,
        port: f.port,
    };
    match l.probe()? {
        PortState::Byteman(v) => {
            tracing::debug!(port = f.port, version = %v, "JVMChaos: Byteman already listens");
        }
        PortState::Other(answer) => {
            return Err(JvmError::PortTaken {
                port: f.port,
                answer,
            })
        }
        PortState::Free => {
            let refs: Vec<(&str, &[u8])> = jar_bytes.iter().map(|(s, b)| (*s, &b[..])).collect();
            let written = jars::install(f.jvm.pid, &refs)?;
            if written != f.jars {
                return Err(JvmError::Jar {
                    pid: f.jvm.pid,
                    reason: format!("written as {written:?}, journaled as {:?}", f.jars),
                });
            }
            let jvm = Jvm::of(f.jvm.pid)?;
            let agent = &f.jars[0];
            let rc = attach::load_agent(&jvm, agent, &agent_options(agent, f.port))?;
            // The listener starts in the agent's thread: wait for it.
            let t0 = Instant::now();
            loop {
                match l.probe()? {
                    PortState::Byteman(_) => break,
                    PortState::Other(answer) => {
                        return Err(JvmError::PortTaken {
                            port: f.port,
                            answer,
                        })
                    }
                    PortState::Free if rc != 0 && t0.elapsed() > Duration::from_secs(2) => {
                        return Err(JvmError::OtherPort {
                            pid: f.jvm.pid,
                            port: f.port,
                        })
                    }
                    PortState::Free if t0.elapsed() > Duration::from_secs(10) => {
                        return Err(JvmError::Attach {
                            pid: f.jvm.pid,
                            reason: format!(
                                "the agent loaded (return code {rc}) but nothing listens on port {}",
                                f.port
                            ),
                        })
                    }
                    PortState::Free => std::thread::sleep(Duration::from_millis(50)),
                }
            }
            tracing::info!(
                pid = f.jvm.pid,
                port = f.port,
                rc,
                "JVMChaos: Byteman agent loaded"
            );
        }
    }
    for helper in &f.jars[1..] {
        l.boot(helper)?;
    }
    if l.load(&f.script, &f.rule)?.is_none() {
        return Err(JvmError::Protocol {
            port: f.port,
            reply: "connection refused after the agent was found".into(),
        });
    }
    // Byteman answers OK even for a rule that will not compile: watch LIST for a moment.
    let t0 = Instant::now();
    loop {
        let list = l.list()?.unwrap_or_default();
        let failed = byteman::failed_rules(&list, &f.names);
        if let Some((rule, reason)) = failed.into_iter().next() {
            let _ = l.delete(&f.script, &f.rule);
            return Err(JvmError::Rejected { rule, reason });
        }
        let present = byteman::listed(&list, &f.names);
        if present.len() == f.names.len() && compiled_all(&list, &f.names) {
            return Ok(());
        }
        if t0.elapsed() > CHECK_WINDOW {
            if present.len() != f.names.len() {
                let _ = l.delete(&f.script, &f.rule);
                return Err(JvmError::Rejected {
                    rule: f
                        .names
                        .iter()
                        .find(|n| !present.contains(n))
                        .cloned()
                        .unwrap_or_default(),
                    reason: "Byteman does not list it after loading the script".into(),
                });
            }
            // Not triggered yet: a compile error would only show at the first call.
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether every rule of `names` shows `compiled successfully` in a `LIST` reply.
fn compiled_all(list: &str, names: &[String]) -> bool {
    names.iter().all(|n| {
        let marker = format!("RULE {n}");
        list.split("# File ")
            .filter(|sec| sec.lines().any(|l| l.trim() == marker))
            .any(|sec| sec.contains("compiled successfully"))
    })
}

impl Effect for JvmFault {
    fn kind(&self) -> String {
        "jvm".into()
    }

    fn scope(&self) -> Scope {
        Scope::Process
    }

    fn durability(&self) -> Durability {
        Durability::Boot
    }

    fn summary(&self) -> String {
        format!(
            "Byteman rule(s) {} on port {} in JVM pid {}{}",
            self.names.join(", "),
            self.port,
            self.jvm.pid,
            if self.container.is_empty() {
                String::new()
            } else {
                format!(" of {}", self.container)
            }
        )
    }

    fn apply<'a>(
        &'a self,
        _ctx: &'a EffectCtx,
    ) -> BoxFuture<'a, Result<Option<ProcessIdentity>, EffectError>> {
        Box::pin(async move {
            if !self.jvm.is_alive() {
                return Err(EffectError::of(JvmError::Gone(self.jvm.pid)));
            }
            let jar_bytes = super::read_jars().map_err(EffectError::of)?;
            let f = self.clone();
            blocking("JVMChaos", move || install(&f, jar_bytes)).await?;
            Ok(None)
        })
    }

    fn revert<'a>(&'a self, _ctx: &'a EffectCtx) -> BoxFuture<'a, Result<(), EffectError>> {
        Box::pin(async move {
            let Some(net) = self.net() else {
                return Ok(());
            };
            let f = self.clone();
            blocking("JVMChaos", move || -> Result<(), JvmError> {
                let l = Listener {
                    net: &net,
                    port: f.port,
                };
                // Nothing listening, or something that is not Byteman (a port found taken):
                // no rules of ours there, and nothing is sent to it.
                match l.probe()? {
                    PortState::Byteman(_) => l.delete(&f.script, &f.rule).map(drop),
                    PortState::Free | PortState::Other(_) => Ok(()),
                }
            })
            .await
        })
    }

    fn is_reverted<'a>(&'a self, _ctx: &'a EffectCtx) -> BoxFuture<'a, Result<bool, EffectError>> {
        Box::pin(async move {
            let Some(net) = self.net() else {
                return Ok(true);
            };
            let f = self.clone();
            blocking("JVMChaos", move || -> Result<bool, JvmError> {
                let l = Listener {
                    net: &net,
                    port: f.port,
                };
                if !matches!(l.probe()?, PortState::Byteman(_)) {
                    return Ok(true);
                }
                Ok(match l.list()? {
                    None => true,
                    Some(list) => byteman::listed(&list, &f.names).is_empty(),
                })
            })
            .await
        })
    }

    fn manual_cleanup(&self) -> String {
        format!(
            "bmsubmit.sh -p {} -u <the rule script> against JVM pid {} (or restart the JVM); rules: {}",
            self.port,
            self.jvm.pid,
            self.names.join(", ")
        )
    }

    fn target_gone(&self, _: &EffectCtx) -> bool {
        !self.jvm.is_alive()
    }
}

/// What `InstallJVMRules` / `UninstallJVMRules` carry.
#[derive(Debug, Clone, Default)]
pub struct JvmRequest {
    pub rule: String,
    pub port: i32,
}

struct Checked {
    rule: String,
    names: Vec<String>,
    port: u16,
    script: String,
}

fn check(req: &JvmRequest) -> Result<Checked, JvmError> {
    let port = u16::try_from(req.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(JvmError::Port(i64::from(req.port)))?;
    let rule = req.rule.trim().to_string();
    let names = byteman::rule_names(&rule);
    if names.is_empty() {
        return Err(JvmError::Rule(
            "no `RULE <name>` line: not a Byteman rule script".into(),
        ));
    }
    if !rule.lines().any(|l| l.trim() == "ENDRULE") {
        return Err(JvmError::Rule("no `ENDRULE` line".into()));
    }
    let mut dup = names.clone();
    dup.sort();
    dup.dedup();
    if dup.len() != names.len() {
        return Err(JvmError::Rule("two rules with the same name".into()));
    }
    let script = jars::name_of("faultd", rule.as_bytes())
        .trim_end_matches(".jar")
        .to_string();
    Ok(Checked {
        rule,
        names,
        port,
        script,
    })
}

/// The first `java` process among `init` and its descendants (upstream's choice).
pub fn find_jvm(init: u32) -> Option<u32> {
    let parents: Vec<(u32, u32)> = crate::process::pids()
        .into_iter()
        .filter_map(|p| Some((p, crate::process::parent_pid(p)?)))
        .collect();
    crate::faults::time::members::descendants(init, &parents)
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "java")
        })
}

/// The journal group of the JVMChaos of one JVM's port.
pub fn group_of(jvm: &ProcessIdentity, port: u16) -> String {
    format!("jvm/{}:{}/{port}", jvm.pid, jvm.start_ticks)
}

/// `InstallJVMRules`: loads `req.rule` into the container's JVM (the same script again: the
/// fault already in force).
pub async fn install_jvm_rules<E: Holds<JvmFault>>(
    engine: &Engine<E>,
    runtimes: &Runtimes,
    target: &Target,
    req: &JvmRequest,
    meta: &FaultMeta,
) -> Result<FaultRecord<E>, ApplyError> {
    let c = check(req)?;
    let init = target.resolve(runtimes, "container_id").await?;
    let pid = find_jvm(init.pid).ok_or(JvmError::NoJvm(init.pid))?;
    let jvm = ProcessIdentity::of(pid).map_err(|_| JvmError::Gone(pid))?;
    let netns = Namespace::of_pid(pid, NsKind::Net)
        .map_err(|e| JvmError::Namespace(e.to_string()))?
        .id();
    let group = group_of(&jvm, c.port);
    let lock = engine.lock_group(&group).await;
    if let Some(same) = engine
        .active_in_group(&group)
        .into_iter()
        .find(|r| r.effect.get().is_some_and(|f: &JvmFault| f.rule == c.rule))
    {
        return Ok(same);
    }
    let jar_bytes = super::read_jars()?;
    let jar_paths = jar_bytes
        .iter()
        .map(|(stem, b)| format!("{}/{}", jars::DIR, jars::name_of(stem, b)))
        .collect();
    let fault = JvmFault {
        container: target.container_id().to_string(),
        jvm,
        netns,
        port: c.port,
        script: c.script,
        rule: c.rule,
        names: c.names,
        jars: jar_paths,
    };
    let identity = TargetIdentity {
        container_id: target.container_id().to_string(),
        pod_uid: meta.pod_uid.clone(),
        pid,
        pid_start_time_ms: jvm.start_time_ms,
        netns_dev: netns.dev,
        netns_ino: netns.ino,
        ..Default::default()
    };
    Ok(engine
        .apply_locked(&lock, meta.fault(E::wrap(fault), identity, &group))
        .await?)
}

/// `UninstallJVMRules`: deletes `req.rule` from the container's JVM. Nothing to delete (no
/// container, no JVM, no listener, no such rule) is success.
pub async fn uninstall_jvm_rules<E: Holds<JvmFault>>(
    engine: &Engine<E>,
    runtimes: &Runtimes,
    target: &Target,
    req: &JvmRequest,
) -> Result<(), ApplyError> {
    let c = check(req)?;
    let init = match target.resolve(runtimes, "container_id").await {
        Ok(p) => p,
        Err(TargetError::Missing(w)) => return Err(TargetError::Missing(w).into()),
        Err(e) => {
            tracing::info!(error = %e, "UninstallJVMRules: no container, nothing to delete");
            return Ok(());
        }
    };
    let Some(pid) = find_jvm(init.pid) else {
        return Ok(());
    };
    let Ok(jvm) = ProcessIdentity::of(pid) else {
        return Ok(());
    };
    let group = group_of(&jvm, c.port);
    let lock = engine.lock_group(&group).await;
    let ours: Vec<String> = engine
        .active_in_group(&group)
        .into_iter()
        .filter(|r| r.effect.get().is_some_and(|f: &JvmFault| f.rule == c.rule))
        .map(|r| r.id)
        .collect();
    if !ours.is_empty() {
        for id in ours {
            engine.revert_locked(&lock, &id, EndReason::Request).await?;
        }
        return Ok(());
    }
    // Not faultd's (installed before a state dir was lost, or by hand): delete it anyway,
    // as upstream's stateless uninstall does, but only from Byteman.
    let port = c.port;
    let (script, rule) = (c.script, c.rule);
    tokio::task::spawn_blocking(move || -> Result<(), JvmError> {
        let Ok(net) = Namespace::of_pid(pid, NsKind::Net) else {
            return Ok(());
        };
        let l = Listener { net: &net, port };
        if let PortState::Byteman(_) = l.probe()? {
            l.delete(&script, &rule)?;
        }
        Ok(())
    })
    .await
    .map_err(|e| JvmError::Namespace(e.to_string()))??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked() {
        let ok = JvmRequest {
            rule:
                "RULE a\nCLASS X\nMETHOD m\nAT ENTRY\nIF true\nDO\n  Thread.sleep(1L);\nENDRULE\n"
                    .into(),
            port: 9277,
        };
        let c = check(&ok).unwrap();
        assert_eq!((c.port, c.names.clone()), (9277, vec!["a".to_string()]));
        assert!(c.script.starts_with("faultd-"));
        for port in [0, -1, 70000] {
            let e = check(&JvmRequest { port, ..ok.clone() }).err().unwrap();
            assert_eq!(e.kind(), FailureKind::InvalidArgument, "{e}");
        }
        for rule in [
            "",
            "CLASS X",
            "RULE a\nCLASS X",
            "RULE a\nENDRULE\nRULE a\nENDRULE",
        ] {
            let e = check(&JvmRequest {
                rule: rule.into(),
                ..ok.clone()
            })
            .err()
            .unwrap();
            assert_eq!(e.kind(), FailureKind::InvalidArgument, "{rule:?}: {e}");
        }
    }

    #[test]
    fn options_are_bminstall_s() {
        assert_eq!(
            agent_options("/tmp/a.jar", 9277),
            "listener:true,port:9277,boot:/tmp/a.jar,prop:org.jboss.byteman.transform.all=true"
        );
    }
}
