//! What upstream chaos-daemon runs for `SetTcs` (its `tc_server.go`, reference section 2.1), as
//! the baseline the benchmarks compare faultd with: every command a process entering the pod's
//! network namespace (upstream: `nsexec -n`; here `nsenter -t PID -n`).
use std::process::{Command, Output};

/// `nsenter -t PID -n <argv>`: its output, or its stderr as the error.
pub fn nsenter(pid: u32, argv: &[&str]) -> Result<Output, String> {
    let out = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n"])
        .args(argv)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The reset step: list the interfaces with `ip -j addr show`, then `tc qdisc del dev <if> root`
/// on every one of them, ignoring "nothing to delete". Alone, it is upstream's recover (a SetTcs
/// with no rules).
pub fn reset(pid: u32) -> Result<(), String> {
    let out = nsenter(pid, &["ip", "-j", "addr", "show"])?;
    let addrs: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let names: Vec<String> = addrs
        .as_array()
        .ok_or("ip -j addr show: not an array")?
        .iter()
        .filter_map(|a| a["ifname"].as_str().map(str::to_string))
        .collect();
    for name in names {
        match nsenter(pid, &["tc", "qdisc", "del", "dev", &name, "root"]) {
            Ok(_) => {}
            Err(e) if e.contains("handle of zero") || e.contains("No such file or directory") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A SetTcs with one rule: the reset, then `tc qdisc add dev <dev> root handle 1: <qdisc...>`.
pub fn set_one(pid: u32, dev: &str, qdisc: &[&str]) -> Result<(), String> {
    reset(pid)?;
    let mut add = vec!["tc", "qdisc", "add", "dev", dev, "root", "handle", "1:"];
    add.extend_from_slice(qdisc);
    nsenter(pid, &add).map(|_| ())
}
