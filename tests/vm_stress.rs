//! VM tier: the host stressor tests (`tests/host_stress.rs`) again, inside the qemu guest where
//! the stock Debian kernel runs cgroup v2 and containerd places containers in the unified
//! hierarchy: CPU load measured from the container's cgroup, OOM inside the container, cancel
//! within a second, kill -9 of faultd. Run by `tests/run-all.sh` (tier 3).
#[path = "host_stress.rs"]
mod cases;
