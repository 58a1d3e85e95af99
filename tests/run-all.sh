#!/usr/bin/env bash
# shellcheck disable=SC2329  # functions invoked through run_step
# Runs all tests of faultd (this is what CI runs, via .ci/run). Needs root on Debian 12.
#
#   setup   tests/env/setup.sh: apt packages, stock Debian kernel + initramfs, test image (cached)
#   tier 1  cargo fmt --check, cargo clippy -D warnings, cargo test --all-targets (unit +
#           in-process tests, nothing #[ignore]d)
#   tier 2  tests/host_*.rs, --ignored, on the host    private containerd at the k3s socket path,
#                                                      private dockerd (tests/env/docker)
#   tier 3  tests/vm_*.rs, --ignored, in ONE qemu VM   real sch_netem, cgroup v2, guest containerd
#           tests/vm/reboot-*.sh                       two boots sharing a persistent disk
#   tier 4  cargo build --release; tests/deploy.sh (image filesystem + manifests, pytest);
#           tests/bench/run.sh --smoke (benchmark suite, small sizes)
#
# Every tier runs even if an earlier one failed. The last line is "N passed, M failed, K skipped";
# the exit status is non-zero if anything failed. Logs: tests/env/cache/logs/ (one run).
# env: FAULTD_SKIP_HOST=1, FAULTD_SKIP_VM=1    skip tier 2 / tier 3 (local use; reported loudly)
#      FAULTD_VM_SUITE_TIMEOUT (s, 1200)       whole tier-3 suite VM
#      FAULTD_VM_TEST_TIMEOUT (s, 600)         one VM test binary
#      FAULTD_VM_BOOT_TIMEOUT (s, 300)         one boot of a reboot scenario
#      FAULTD_TEST_LOGDIR                      log directory (default tests/env/cache/logs)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
ENV_DIR=$ROOT/tests/env
CACHE=${TESTENV_CACHE:-$ENV_DIR/cache}
mkdir -p "$CACHE"

# one run at a time: the containerd socket, disk images and logs are shared
if [ "${FAULTD_RUN_ALL_LOCKED:-}" != 1 ]; then
  flock -n "$CACHE/run-all.lock" true || echo "run-all: another tests/run-all.sh is running; waiting for it"
  export FAULTD_RUN_ALL_LOCKED=1
  exec flock -o "$CACHE/run-all.lock" bash "$ROOT/tests/run-all.sh" "$@"
fi
# a private mount namespace, so tier 2 can give /run/k3s and /run/containerd their own tmpfs:
# a developer's containerd at the k3s path then neither disturbs nor is disturbed by the tests
if [ "${FAULTD_RUN_ALL_NS:-}" != 1 ] && unshare --mount --propagation private true 2>/dev/null; then
  export FAULTD_RUN_ALL_NS=1
  exec unshare --mount --propagation private bash "$ROOT/tests/run-all.sh" "$@"
fi

if [ -n "${FAULTD_TEST_LOGDIR:-}" ]; then   # someone else's directory: only replace our own files
  LOGDIR=$FAULTD_TEST_LOGDIR; mkdir -p "$LOGDIR"
  rm -rf "$LOGDIR/vm-suite" "$LOGDIR"/*.log "$LOGDIR"/*.json
else
  LOGDIR=$CACHE/logs; rm -rf "$LOGDIR"; mkdir -p "$LOGDIR"
fi
LOGDIR=$(cd "$LOGDIR" && pwd)
CTR_BASE=$CACHE/containerd
# tier 2's containerd socket: the k3s path (in this run's mount namespace, see tier 2), unless
# FAULTD_TEST_CTR_SOCK says otherwise; without a private mount namespace, if a containerd that is not
# ours already serves the k3s path (a developer's own), a private path instead
CTR_SOCK=${FAULTD_TEST_CTR_SOCK:-/run/k3s/containerd/containerd.sock}
CTR_SOCK_FALLBACK=/run/faultd-test/containerd.sock
TEST_IMAGE=docker.io/library/testbox:latest
TEST_IMAGE_TAR=$CACHE/testbox.tar
# tier 2's Docker engine (tests/env/docker/start-docker.sh): socket and exec root in /run/faultd-test
# (a private tmpfs in this run's mount namespace), data root in DOCKER_BASE
DOCKER_BASE=$CACHE/docker
DOCKER_SOCK=${FAULTD_TEST_DOCKER_SOCK:-/run/faultd-test/docker.sock}
DOCKER_IMAGE=faultd-testbox:latest

PASSED=0 FAILED=0 SKIPPED=0
STEPS=()        # "seconds|rc|name" per step
RESULTS=()      # per test binary / scenario: "name: ..." lines
FAILURES=()     # what failed, for the summary
SKIP_NOTES=()
RUN_START=$(date +%s.%N)

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
banner() { printf '\n==== %s\n' "$*"; }
loud() { printf '\n'; printf '!!!! %s\n' "$@"; printf '\n'; }

# run_step NAME LOG CMD...: run CMD, output to the console and LOG; records time and status.
# Succeeds if CMD's status is EXPECT_RC (default 0; see run_step_expect); the status is in LAST_RC.
LAST_RC=0
run_step() {
  local name=$1 log=$2; shift 2
  local expect=${EXPECT_RC:-0} t0 dt
  t0=$(now)
  printf '\n---- %s   [%s]\n' "$name" "$(date +%T)"
  "$@" 2>&1 | tee "$log"
  LAST_RC=${PIPESTATUS[0]}
  dt=$(secs "$t0" "$(now)")
  STEPS+=("$dt|$LAST_RC|$name")
  if [ "$LAST_RC" -eq "$expect" ]; then
    printf -- '---- %s: ok (%ss)\n' "$name" "$dt"
  else
    printf -- '---- %s: FAILED rc=%s (%ss)\n' "$name" "$LAST_RC" "$dt"
    FAILURES+=("$name (rc=$LAST_RC, log: ${log#"$ROOT"/})")
  fi
  [ "$LAST_RC" -eq "$expect" ]
}
run_step_expect() { local EXPECT_RC=$1; shift; run_step "$@"; }

# "P F" from libtest's "test result: ok. P passed; F failed; ..." lines in FILE
count_results() {
  awk '{ sub(/\r$/, "") }
       match($0, /test result: (ok|FAILED)\. [0-9]+ passed; [0-9]+ failed/) {
         split(substr($0, RSTART, RLENGTH), a, " "); p += a[4]; f += a[6] }
       END { print p + 0, f + 0 }' "$1" 2>/dev/null || echo "0 0"
}

# account NAME FILE RC [report]: add FILE's test counts to the totals. A run that failed without a
# failing test result (build error, crash, timeout) counts as one failed test. "report": also list
# a failure in the summary (for runs that are not a step of their own).
account() {
  local name=$1 file=$2 rc=$3 report=${4:-} p f note=
  read -r p f < <(count_results "$file")
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; note=" (rc=$rc without a failing test: counted as 1 failed)"; fi
  PASSED=$((PASSED + p)); FAILED=$((FAILED + f))
  RESULTS+=("$name: $p passed, $f failed$note")
  if [ -n "$report" ] && [ "$f" -gt 0 ]; then FAILURES+=("$name: $f failed (log: ${file#"$ROOT"/})"); fi
}

# exe_from_json test|bin NAME FILE: executable of target NAME from cargo's JSON messages in FILE
exe_from_json() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
kind, name, path = sys.argv[1:4]
exe = ""
for line in open(path, errors="replace"):
    if not line.startswith("{"):
        continue
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if (m.get("reason") == "compiler-artifact" and m["target"]["name"] == name
            and m.get("executable") and m["profile"]["test"] == (kind == "test")):
        exe = m["executable"]
print(exe)
PY
}

# build_test NAME JSONFILE: cargo test --no-run for tests/NAME.rs (JSON to JSONFILE, errors rendered)
build_test() { cargo test --no-run --test "$1" --message-format=json-render-diagnostics > "$2"; }
build_bins() { cargo build --bins --message-format=json-render-diagnostics > "$1"; }

# number of #[ignore]d tests in a built test executable (for the skipped count)
count_ignored() { "$1" --ignored --list --format terse 2>/dev/null | grep -c ': test$' || true; }

# count the tests of tests/PREFIX*.rs as skipped (the tier was switched off)
skip_tier_tests() {
  local prefix=$1 f name exe n
  for f in tests/"$prefix"*.rs; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .rs)
    if build_test "$name" "$LOGDIR/skip-$name.json" 2>/dev/null; then
      exe=$(exe_from_json test "$name" "$LOGDIR/skip-$name.json")
      n=0; [ -z "$exe" ] || n=$(count_ignored "$exe")
      SKIPPED=$((SKIPPED + n)); RESULTS+=("$name: $n skipped")
    fi
  done
}

TIER_SECS=()
tier_done() { TIER_SECS+=("$1: $(secs "$2" "$(now)")s"); }

# ---------------------------------------------------------------------------------------------
banner "setup"
T=$(now)
run_step "setup: tests/env/setup.sh" "$LOGDIR/setup.log" bash "$ENV_DIR/setup.sh"
tier_done setup "$T"

# ---------------------------------------------------------------------------------------------
banner "tier 1: cargo test --all-targets (unit + in-process tests)"
T=$(now)
# style and lints first: a failure here fails the run but does not stop the tests
run_step "tier1: cargo fmt --check" "$LOGDIR/tier1-fmt.log" cargo fmt --all -- --check
run_step "tier1: cargo clippy -D warnings" "$LOGDIR/tier1-clippy.log" cargo clippy --all-targets --locked -- -D warnings
run_step "tier1: cargo test --all-targets" "$LOGDIR/tier1.log" cargo test --all-targets --no-fail-fast
account "tier1 (cargo test --all-targets)" "$LOGDIR/tier1.log" "$LAST_RC"
tier_done "tier 1" "$T"

# ---------------------------------------------------------------------------------------------
CONTAINERD_UP=
our_containerd() { # is the containerd recorded in CTR_BASE running?
  local pid; pid=$(cat "$CTR_BASE/containerd.pid" 2>/dev/null) || return 1
  tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null | grep -qxF "$CTR_BASE/config.toml"
}
stop_containerd() {
  if [ -n "$CONTAINERD_UP" ]; then
    CONTAINERD_UP=
    run_step "tier2: stop containerd" "$LOGDIR/tier2-stop-containerd.log" \
      env CTR_SOCK="$CTR_SOCK" bash "$ENV_DIR/ctr/stop-containerd.sh" "$CTR_BASE"
    cp -f "$CTR_BASE/containerd.log" "$LOGDIR/tier2-containerd.log" 2>/dev/null
  fi
  return 0
}
DOCKER_UP=
stop_docker() {
  if [ -n "$DOCKER_UP" ]; then
    DOCKER_UP=
    run_step "tier2: stop dockerd" "$LOGDIR/tier2-stop-docker.log" \
      env DOCKER_SOCK="$DOCKER_SOCK" bash "$ENV_DIR/docker/stop-docker.sh" "$DOCKER_BASE"
    cp -f "$DOCKER_BASE/dockerd.log" "$LOGDIR/tier2-dockerd.log" 2>/dev/null
  fi
  return 0
}
# needs_docker FILE: the host test file uses the test dockerd
needs_docker() { grep -qE 'common::docker|FAULTD_TEST_DOCKER_SOCK' "$1"; }
trap 'stop_docker; stop_containerd' EXIT
trap 'echo "run-all: interrupted" >&2; exit 130' INT TERM

HOST_TESTS=(tests/host_*.rs); [ -e "${HOST_TESTS[0]}" ] || HOST_TESTS=()
banner "tier 2: host privileged tests (${#HOST_TESTS[@]} files: tests/host_*.rs)"
T=$(now)
if [ "${FAULTD_SKIP_HOST:-}" = 1 ]; then
  loud "TIER 2 (HOST) SKIPPED because FAULTD_SKIP_HOST=1" "its tests are NOT run; CI runs them"
  SKIP_NOTES+=("tier 2 (host) SKIPPED (FAULTD_SKIP_HOST=1)")
  skip_tier_tests host_
elif [ ${#HOST_TESTS[@]} -eq 0 ]; then
  echo "no tests/host_*.rs"
else
  [ "$(id -u)" = 0 ] || echo "run-all: WARNING: tier 2 needs root" >&2
  if [ "${FAULTD_RUN_ALL_NS:-}" = 1 ] && [ -z "${FAULTD_TEST_CTR_SOCK:-}" ]; then
    # only this run (and the processes it starts) sees these mounts
    mkdir -p /run/k3s /run/containerd
    mount -t tmpfs -o mode=0755 faultd-test /run/k3s && mount -t tmpfs -o mode=0711 faultd-test /run/containerd &&
      echo "tier 2: /run/k3s and /run/containerd are private to this run (mount namespace)"
    if [ -z "${FAULTD_TEST_DOCKER_SOCK:-}" ]; then
      mkdir -p /run/faultd-test && mount -t tmpfs -o mode=0755 faultd-test /run/faultd-test &&
        echo "tier 2: /run/faultd-test (dockerd's socket and exec root) is private to this run"
    fi
  elif [ -S "$CTR_SOCK" ] && ctr --connect-timeout 2s -a "$CTR_SOCK" version >/dev/null 2>&1 && ! our_containerd; then
    loud "another containerd (not started by this harness) serves $CTR_SOCK: leaving it alone;" \
         "tier 2 uses a private containerd at $CTR_SOCK_FALLBACK instead (FAULTD_TEST_CTR_SOCK)"
    CTR_SOCK=$CTR_SOCK_FALLBACK
  fi
  if run_step "tier2: start containerd" "$LOGDIR/tier2-start-containerd.log" \
       env CTR_SOCK="$CTR_SOCK" bash "$ENV_DIR/ctr/start-containerd.sh" "$CTR_BASE"; then
    CONTAINERD_UP=1
    run_step "tier2: import test image" "$LOGDIR/tier2-import-image.log" \
      env CTR_SOCK="$CTR_SOCK" FAULTD_TEST_IMAGE="$TEST_IMAGE" bash "$ENV_DIR/ctr/import-image.sh" "$TEST_IMAGE_TAR"
    # dockerd runs its own containerd, never the one above; if it does not start, the files that
    # need it count as failed
    DOCKER_UP=1   # from here on, stop_docker cleans up whatever start-docker.sh got to start
    run_step "tier2: start dockerd + import test image" "$LOGDIR/tier2-start-docker.log" \
      env DOCKER_SOCK="$DOCKER_SOCK" FAULTD_TEST_DOCKER_IMAGE="$DOCKER_IMAGE" FAULTD_TEST_IMAGE_TAR="$TEST_IMAGE_TAR" \
      bash "$ENV_DIR/docker/start-docker.sh" "$DOCKER_BASE" || stop_docker
    for f in "${HOST_TESTS[@]}"; do
      name=$(basename "$f" .rs)
      if [ -z "$DOCKER_UP" ] && needs_docker "$f"; then
        account "$name (host, not run: no dockerd)" /dev/null 1
        continue
      fi
      run_step "tier2: $name" "$LOGDIR/tier2-$name.log" \
        env FAULTD_TEST_CTR_SOCK="$CTR_SOCK" FAULTD_TEST_IMAGE="$TEST_IMAGE" FAULTD_TEST_IMAGE_TAR="$TEST_IMAGE_TAR" \
        FAULTD_TEST_DOCKER_SOCK="$DOCKER_SOCK" FAULTD_TEST_DOCKER_IMAGE="$DOCKER_IMAGE" \
        cargo test --test "$name" -- --ignored --test-threads=1
      account "$name (host)" "$LOGDIR/tier2-$name.log" "$LAST_RC"
    done
  else
    # never point the tests at a containerd we did not start
    for f in "${HOST_TESTS[@]}"; do account "$(basename "$f" .rs) (host, not run: no containerd)" /dev/null 1; done
  fi
  stop_docker
  stop_containerd
fi
tier_done "tier 2" "$T"

# ---------------------------------------------------------------------------------------------
VM_TESTS=(tests/vm_*.rs); [ -e "${VM_TESTS[0]}" ] || VM_TESTS=()
REBOOTS=(tests/vm/reboot-*.sh); [ -e "${REBOOTS[0]}" ] || REBOOTS=()
banner "tier 3: VM tests (${#VM_TESTS[@]} files: tests/vm_*.rs; ${#REBOOTS[@]} reboot scenarios: tests/vm/reboot-*.sh)"
T=$(now)
if [ "${FAULTD_SKIP_VM:-}" = 1 ]; then
  loud "TIER 3 (VM) SKIPPED because FAULTD_SKIP_VM=1" "its tests are NOT run; CI runs them"
  SKIP_NOTES+=("tier 3 (VM) SKIPPED (FAULTD_SKIP_VM=1)")
  skip_tier_tests vm_
  SKIPPED=$((SKIPPED + ${#REBOOTS[@]}))
  [ ${#REBOOTS[@]} -eq 0 ] || RESULTS+=("reboot scenarios: ${#REBOOTS[@]} skipped")
else
  SUITE=()
  FAULTD_BIN=
  for f in "${VM_TESTS[@]}"; do
    name=$(basename "$f" .rs)
    if run_step "tier3: build $name" "$LOGDIR/tier3-build-$name.log" build_test "$name" "$LOGDIR/tier3-build-$name.json"; then
      # the daemon (FAULTD_BIN) comes from the same build: `cargo build` would resolve dependency
      # features without the dev-dependencies and rebuild part of the tree (~80 s cold)
      [ -n "$FAULTD_BIN" ] || FAULTD_BIN=$(exe_from_json bin faultd "$LOGDIR/tier3-build-$name.json")
      exe=$(exe_from_json test "$name" "$LOGDIR/tier3-build-$name.json")
      if [ -n "$exe" ]; then SUITE+=("$name=$exe")
      else account "$name (vm)" /dev/null 1; FAILURES+=("$name: no test executable in cargo's output"); fi
    else
      account "$name (vm)" /dev/null 1
    fi
  done
  if [ -z "$FAULTD_BIN" ] && [ ${#REBOOTS[@]} -gt 0 ] &&
     run_step "tier3: cargo build --bins" "$LOGDIR/tier3-build-bins.log" build_bins "$LOGDIR/tier3-build-bins.json"; then
    FAULTD_BIN=$(exe_from_json bin faultd "$LOGDIR/tier3-build-bins.json")
  fi
  [ -z "$FAULTD_BIN" ] || export FAULTD_BIN
  if [ ${#SUITE[@]} -gt 0 ]; then
    OUT=$LOGDIR/vm-suite
    mkdir -p "$OUT"
    run_step "tier3: VM suite (${#SUITE[@]} binaries, cgroup v2)" "$LOGDIR/tier3-vm-suite.console.log" \
      env VMT_SHARE="$OUT" VMT_CGROUP=v2 VMT_TIMEOUT="${FAULTD_VM_SUITE_TIMEOUT:-1200}" \
      bash "$ENV_DIR/vm/run-vm.sh" -m 2048 -- "$ENV_DIR/vm/guest-suite.sh" "$OUT" "${SUITE[@]}"
    suite_rc=$LAST_RC
    suite_failed_before=$FAILED
    if [ -f "$OUT/guest-containerd.rc" ] && [ "$(cat "$OUT/guest-containerd.rc")" != 0 ]; then
      FAILED=$((FAILED + 1)); RESULTS+=("vm: guest containerd setup failed (counted as 1 failed)")
      FAILURES+=("vm: guest containerd setup (log: ${OUT#"$ROOT"/}/guest-containerd.out)")
    fi
    for spec in "${SUITE[@]}"; do
      name=${spec%%=*}
      if [ -f "$OUT/$name.rc" ]; then rc=$(cat "$OUT/$name.rc"); else rc=125; echo "run-all: $name did not finish in the VM"; fi
      account "$name (vm)" "$OUT/$name.out" "$rc" report
    done
    if [ "$suite_rc" -ne 0 ] && [ "$FAILED" -eq "$suite_failed_before" ]; then
      FAILED=$((FAILED + 1)); RESULTS+=("vm suite: rc=$suite_rc without a failing test (counted as 1 failed)")
    fi
  fi
  for script in "${REBOOTS[@]}"; do
    name=$(basename "$script" .sh)
    if [ ! -x "$script" ]; then
      loud "$script is not executable (chmod +x): SKIPPED"
      SKIPPED=$((SKIPPED + 1)); RESULTS+=("$name: skipped (not executable)"); continue
    fi
    img=$CACHE/vm-disks/$name.img
    mkdir -p "$CACHE/vm-disks"; rm -f "$img"
    ok=
    if run_step_expect 125 "tier3: $name boot 1 (expects hard reset: rc 125)" "$LOGDIR/tier3-$name-boot1.log" \
         env FAULTD_BOOT=1 VMT_CGROUP=v2 VMT_TIMEOUT="${FAULTD_VM_BOOT_TIMEOUT:-300}" \
         bash "$ENV_DIR/vm/run-vm.sh" -m 2048 --disk "$img:/var/lib/faultd" -- "$ROOT/$script"; then
      run_step "tier3: $name boot 2 (expects rc 0)" "$LOGDIR/tier3-$name-boot2.log" \
        env FAULTD_BOOT=2 VMT_CGROUP=v2 VMT_TIMEOUT="${FAULTD_VM_BOOT_TIMEOUT:-300}" \
        bash "$ENV_DIR/vm/run-vm.sh" -m 2048 --disk "$img:/var/lib/faultd" -- "$ROOT/$script" && ok=1
    fi
    if [ -n "$ok" ]; then PASSED=$((PASSED + 1)); RESULTS+=("$name (reboot): 1 passed, 0 failed"); rm -f "$img"
    else FAILED=$((FAILED + 1)); RESULTS+=("$name (reboot): 0 passed, 1 failed (disk kept: ${img#"$ROOT"/})"); fi
  done
fi
tier_done "tier 3" "$T"

# ---------------------------------------------------------------------------------------------
banner "tier 4: shipping (release build, image filesystem, manifests) and benchmark smoke"
T=$(now)
if run_step "tier4: cargo build --release --locked" "$LOGDIR/tier4-release.log" cargo build --release --locked; then
  run_step "tier4: tests/deploy.sh" "$LOGDIR/tier4-deploy.log" bash "$ROOT/tests/deploy.sh"
  rc=$LAST_RC
  # pytest's closing line: "N passed[, M failed][, K skipped] in Xs"
  p=$(tail -n 5 "$LOGDIR/tier4-deploy.log" | grep -oE '[0-9]+ passed' | tail -1 | grep -oE '[0-9]+' || echo 0)
  f=$(tail -n 5 "$LOGDIR/tier4-deploy.log" | grep -oE '[0-9]+ (failed|error)' | tail -1 | grep -oE '[0-9]+' || echo 0)
  [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ] && f=1
  PASSED=$((PASSED + ${p:-0})); FAILED=$((FAILED + ${f:-0}))
  RESULTS+=("tier4 deploy (pytest): ${p:-0} passed, ${f:-0} failed")
  if [ -x "$ROOT/tests/bench/run.sh" ] || [ -f "$ROOT/tests/bench/run.sh" ]; then
    run_step "tier4: tests/bench/run.sh --smoke" "$LOGDIR/tier4-bench-smoke.log" bash "$ROOT/tests/bench/run.sh" --smoke
    account "tier4 bench smoke" "$LOGDIR/tier4-bench-smoke.log" "$LAST_RC"
  fi
else
  FAILED=$((FAILED + 1)); RESULTS+=("tier4: release build failed (counted as 1 failed)")
fi
tier_done "tier 4" "$T"

# ---------------------------------------------------------------------------------------------
banner "summary"
printf '%-8s %-4s %s\n' seconds rc step
for s in "${STEPS[@]}"; do IFS='|' read -r dt rc name <<<"$s"; printf '%8s %-4s %s\n' "$dt" "$rc" "$name"; done
echo
for t in "${TIER_SECS[@]}"; do echo "  $t"; done
echo "  total: $(secs "$RUN_START" "$(now)")s"
echo
for r in "${RESULTS[@]}"; do echo "  $r"; done
if [ ${#SKIP_NOTES[@]} -gt 0 ]; then loud "${SKIP_NOTES[@]}"; fi
status=0
if [ ${#FAILURES[@]} -gt 0 ] || [ "$FAILED" -gt 0 ]; then
  status=1
  echo "FAILED:"
  for f in "${FAILURES[@]}"; do echo "  - $f"; done
fi
echo "logs: ${LOGDIR#"$ROOT"/}/"
echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
exit $status
