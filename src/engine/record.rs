//! The journal's records: one snapshot of a fault per state change (the latest snapshot of an
//! id wins on replay).
use serde::{Deserialize, Serialize};

/// Life cycle of a fault. Intent is journaled before the kernel is touched, Applied after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Intent,
    Applied,
    Reverting,
    Reverted,
    Failed,
}

impl Phase {
    /// Still (possibly) present in the kernel.
    pub fn is_active(self) -> bool {
        matches!(self, Phase::Intent | Phase::Applied | Phase::Reverting)
    }
}

/// Why a fault ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Its deadline passed.
    Expiry,
    /// Its lease was not renewed in time.
    Lease,
    /// HaltAll.
    Halt,
    /// A new daemon process found it applied by a previous one (crash, kill -9, OOM).
    Restart,
    /// The node rebooted.
    Reboot,
    /// A client asked (recover call, empty desired state, revoke).
    Request,
    /// Replaced by a newer desired state for the same target.
    Replaced,
    /// The daemon was stopped (SIGTERM).
    Shutdown,
    /// Applying failed; whatever was partially applied was undone.
    ApplyFailed,
    /// The target process was OOM-killed (stressors).
    Oom,
    /// The target went away by itself (container or process exited).
    TargetGone,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Expiry => "expiry",
            EndReason::Lease => "lease",
            EndReason::Halt => "halt",
            EndReason::Restart => "restart",
            EndReason::Reboot => "reboot",
            EndReason::Request => "request",
            EndReason::Replaced => "replaced",
            EndReason::Shutdown => "shutdown",
            EndReason::ApplyFailed => "apply_failed",
            EndReason::Oom => "oom",
            EndReason::TargetGone => "target_gone",
        }
    }
}

/// When a fault must be gone. Wall clock for people, and CLOCK_BOOTTIME plus the boot id for the
/// daemon, so setting the clock never extends a fault and a reboot always ends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deadline {
    pub unix_ms: i64,
    pub boottime_ms: u64,
    pub boot_id: String,
}

impl Deadline {
    /// True once passed; a deadline from another boot has always passed.
    pub fn expired(&self, now_boottime_ms: u64, current_boot_id: &str) -> bool {
        self.boot_id != current_boot_id || now_boottime_ms >= self.boottime_ms
    }

    /// Milliseconds left (0 if passed or from another boot).
    pub fn remaining_ms(&self, now_boottime_ms: u64, current_boot_id: &str) -> u64 {
        if self.boot_id != current_boot_id {
            0
        } else {
            self.boottime_ms.saturating_sub(now_boottime_ms)
        }
    }
}

/// What a fault was aimed at, for listings and reconciliation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetIdentity {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod_uid: String,
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub pid_start_time_ms: i64,
    #[serde(default)]
    pub netns_dev: u64,
    #[serde(default)]
    pub netns_ino: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub device: String,
}

/// One snapshot of a fault.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRecord<E> {
    pub id: String,
    pub kind: String,
    pub target: TargetIdentity,
    /// The fault itself, including the prior state its undo restores.
    pub effect: E,
    pub phase: Phase,
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<String>,
    pub deadline: Option<Deadline>,
    /// Boot the fault was applied in.
    pub boot_id: String,
    /// Daemon process that applied it (pid, start ticks).
    pub daemon_pid: u32,
    pub daemon_start_ticks: u64,
    pub created_unix_ms: i64,
    #[serde(default)]
    pub applied_unix_ms: i64,
    #[serde(default)]
    pub ended_unix_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    /// The process the fault started (stressor worker), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<crate::process::ProcessIdentity>,
    /// Free-form grouping key: faults with the same key replace each other (SetTcs on one
    /// netns and device, for example).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
}

impl<E> FaultRecord<E> {
    /// What the fault's effect is told about its record.
    pub fn ctx(&self) -> super::EffectCtx {
        super::EffectCtx {
            fault_id: self.id.clone(),
            instance: self.instance,
        }
    }
}

/// Current time in milliseconds since the epoch.
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// CLOCK_BOOTTIME in milliseconds: monotonic, counts suspend, resets on reboot.
pub fn now_boottime_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_across_a_boot_id_change() {
        let d = Deadline {
            unix_ms: 2_000_000,
            boottime_ms: 10_000,
            boot_id: "boot-a".into(),
        };
        assert!(!d.expired(9_999, "boot-a"));
        assert_eq!(d.remaining_ms(9_000, "boot-a"), 1_000);
        assert!(d.expired(10_000, "boot-a"));
        // After a reboot boottime restarts near zero: the deadline still counts as passed.
        assert!(d.expired(5, "boot-b"));
        assert_eq!(d.remaining_ms(5, "boot-b"), 0);
    }

    #[test]
    fn boottime_is_monotonic_and_nonzero() {
        let a = now_boottime_ms();
        let b = now_boottime_ms();
        assert!(a > 0 && b >= a);
    }
}
