#!/usr/bin/env bash
# Benchmarks and footprint of faultd, each against a baseline measured in the same run.
#
#   tests/bench/run.sh              full sizes (the README's Performance numbers)
#   tests/bench/run.sh --smoke      tiny sizes, < 60 s after the build (CI)
#   tests/bench/run.sh --properties the long property run only (no root needed): every property
#                                   of tests/properties.rs in a release build with
#                                   FAULTD_PROPTEST_CASES cases (default 100000), one at a time,
#                                   timed; log and table in target/bench/properties.{log,txt}
#
# Needs root (network namespaces, tc). Steps:
#   1. cargo test --release --no-run for tests/bench.rs (+ tests/host_runtime.rs, and
#      tests/host_stress.rs when it exists: their bench tests are picked up too)
#   2. the bench tests: `--ignored --nocapture --test-threads=1`; each prints `BENCH {json}` lines
#      (among them TimeChaos stop times: FAULTD_BENCH_TIME_CYCLES apply/revoke cycles against
#      clockreport with 1 and 16 threads, faultd_time_stop_seconds mean and max per process; the
#      HTTPChaos proxy's request latency p50/p99 direct vs proxied, kept-alive and new-connection,
#      requests/s, and apply/update/revoke latency; the IOChaos FUSE layer's overhead on a tmpfs
#      volume in a helper's private mount namespace: sequential read MB/s, 4 KiB pread p50/p99
#      and open+close p50, direct vs through the layer with no actions; needs /dev/fuse)
#   3. container PID resolution (host_runtime's bench_pid_resolution) against a private containerd
#      (tests/env/ctr/*, socket /run/faultd-bench/containerd.sock), and host_stress's bench tests;
#      skipped with a note when containerd, the test image or the test file is missing
#   4. a table (metric, faultd, baseline, ratio, target, met?) and target/bench/latest.json with
#      the machine (nproc, CPU model, kernel, date, commit)
#
# Exit status: non-zero only on a real failure (build error, a bench test failing: RPC errors,
# residue, a crashed daemon); targets that are not met are reported, not fatal.
# Sizes: FAULTD_BENCH_* (see tests/bench.rs); --smoke sets small defaults, explicit values win.
# Logs: target/bench/ (build.json, bench.log, pid.log, stress.log, daemon logs stay in temp dirs).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1

MODE=full
case "${1:-}" in
  --smoke) MODE=smoke ;;
  --properties) MODE=properties ;;
  "") ;;
  -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--smoke|--properties]" >&2; exit 64 ;;
esac

OUT=$ROOT/target/bench
mkdir -p "$OUT"
# one bench run at a time (namespaces, the private containerd, target/bench/ are shared)
if [ "${FAULTD_BENCH_LOCKED:-}" != 1 ]; then
  export FAULTD_BENCH_LOCKED=1
  exec flock "$OUT/.lock" bash "$ROOT/tests/bench/run.sh" "$@"
fi
exe_of() { # test target name -> executable, from cargo's JSON
  python3 - "$1" "$OUT/build.json" <<'PY'
import json, sys
name, path = sys.argv[1:3]
exe = ""
for line in open(path, errors="replace"):
    if not line.startswith("{"):
        continue
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if (m.get("reason") == "compiler-artifact" and m["target"]["name"] == name
            and m.get("executable") and m["profile"]["test"]):
        exe = m["executable"]
print(exe)
PY
}
# ---- --properties: the long property run (tests/properties.rs), nothing else ----------------
if [ "$MODE" = properties ]; then
  export FAULTD_PROPTEST_CASES=${FAULTD_PROPTEST_CASES:-100000}
  echo "bench: building (cargo test --release --test properties --no-run)"
  if ! cargo test --release --test properties --no-run --message-format=json-render-diagnostics > "$OUT/build.json"; then
    echo "bench: release build failed" >&2; exit 1
  fi
  exe=$(exe_of properties)
  [ -n "$exe" ] || { echo "bench: no properties executable in cargo's output" >&2; exit 1; }
  : > "$OUT/properties.log"
  table=$OUT/properties.txt
  printf '%-62s %9s %9s  %s\n' property cases seconds result > "$table"
  failed=0
  T0=$(date +%s.%N)
  for t in $("$exe" --list --format terse | sed -n 's/: test$//p'); do
    t1=$(date +%s.%N)
    "$exe" "$t" --exact --test-threads=1 >> "$OUT/properties.log" 2>&1
    rc=$?
    t2=$(date +%s.%N)
    res=ok; [ "$rc" -eq 0 ] || { res="FAILED (rc=$rc)"; failed=1; }
    printf '%-62s %9s %9.1f  %s\n' "$t" "$FAULTD_PROPTEST_CASES" \
      "$(awk -v a="$t1" -v b="$t2" 'BEGIN{print b-a}')" "$res" | tee -a "$table"
  done
  echo "bench: properties took $(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.0f", b-a}') s; table: target/bench/properties.txt, log: target/bench/properties.log"
  [ "$failed" -eq 0 ] || { echo "bench: FAILED: a property failed (minimal input in the log)" >&2; exit 1; }
  echo "bench: ok"
  exit 0
fi

rm -f "$OUT"/bench.log "$OUT"/pid.log "$OUT"/stress.log "$OUT"/notes.txt
NOTES=$OUT/notes.txt; : > "$NOTES"
note() { echo "bench: $*" | tee -a "$NOTES" >&2; }
FAIL=0
fail() { echo "bench: FAILED: $*" >&2; echo "FAILED: $*" >> "$NOTES"; FAIL=1; }

if [ "$(id -u)" != 0 ]; then
  echo "bench: needs root (network namespaces, tc, nsenter)" >&2
  exit 1
fi
for tool in ip tc nsenter python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool not found" >&2; exit 1; }
done

if [ "$MODE" = smoke ]; then
  export FAULTD_BENCH_ITERS=${FAULTD_BENCH_ITERS:-20}
  export FAULTD_BENCH_NETNS=${FAULTD_BENCH_NETNS:-10}
  export FAULTD_BENCH_CLIENTS=${FAULTD_BENCH_CLIENTS:-2}
  export FAULTD_BENCH_ROUNDS=${FAULTD_BENCH_ROUNDS:-1}
  export FAULTD_BENCH_RECORDS=${FAULTD_BENCH_RECORDS:-1000}
  export FAULTD_BENCH_STARTS=${FAULTD_BENCH_STARTS:-3}
  export FAULTD_BENCH_APPENDS=${FAULTD_BENCH_APPENDS:-200}
  export FAULTD_BENCH_RPCS=${FAULTD_BENCH_RPCS:-1000}
  export FAULTD_BENCH_TIME_CYCLES=${FAULTD_BENCH_TIME_CYCLES:-5}
  export FAULTD_BENCH_HTTP_REQS=${FAULTD_BENCH_HTTP_REQS:-50}
  export FAULTD_BENCH_HTTP_RPS_REQS=${FAULTD_BENCH_HTTP_RPS_REQS:-400}
  export FAULTD_BENCH_HTTP_CYCLES=${FAULTD_BENCH_HTTP_CYCLES:-5}
  export FAULTD_BENCH_IO_MB=${FAULTD_BENCH_IO_MB:-8}
  export FAULTD_BENCH_IO_READS=${FAULTD_BENCH_IO_READS:-200}
else
  export FAULTD_BENCH_ITERS=${FAULTD_BENCH_ITERS:-400}
  export FAULTD_BENCH_NETNS=${FAULTD_BENCH_NETNS:-200}
  export FAULTD_BENCH_CLIENTS=${FAULTD_BENCH_CLIENTS:-20}
  export FAULTD_BENCH_ROUNDS=${FAULTD_BENCH_ROUNDS:-3}
  export FAULTD_BENCH_RECORDS=${FAULTD_BENCH_RECORDS:-10000}
  export FAULTD_BENCH_STARTS=${FAULTD_BENCH_STARTS:-5}
  export FAULTD_BENCH_APPENDS=${FAULTD_BENCH_APPENDS:-2000}
  export FAULTD_BENCH_RPCS=${FAULTD_BENCH_RPCS:-10000}
  export FAULTD_BENCH_TIME_CYCLES=${FAULTD_BENCH_TIME_CYCLES:-20}
  export FAULTD_BENCH_HTTP_REQS=${FAULTD_BENCH_HTTP_REQS:-200}
  export FAULTD_BENCH_HTTP_RPS_REQS=${FAULTD_BENCH_HTTP_RPS_REQS:-2000}
  export FAULTD_BENCH_HTTP_CYCLES=${FAULTD_BENCH_HTTP_CYCLES:-20}
  export FAULTD_BENCH_IO_MB=${FAULTD_BENCH_IO_MB:-64}
  export FAULTD_BENCH_IO_READS=${FAULTD_BENCH_IO_READS:-2000}
fi
# state dirs and journals on the disk under target/ (fdatasync must hit a real filesystem)
export FAULTD_BENCH_DIR=${FAULTD_BENCH_DIR:-$OUT/tmp}
mkdir -p "$FAULTD_BENCH_DIR"
rm -rf "$FAULTD_BENCH_DIR"/faultd-bench-*   # left by a killed run (we hold the bench lock)

# ---- 1. build -------------------------------------------------------------------------------
TESTS=(--test bench)
[ -f tests/host_runtime.rs ] && TESTS+=(--test host_runtime)
[ -f tests/host_stress.rs ] && TESTS+=(--test host_stress)
echo "bench: building (cargo test --release ${TESTS[*]} --no-run); the target dir may be locked by other builds"
T_BUILD=$(date +%s.%N)
if ! cargo test --release "${TESTS[@]}" --no-run --message-format=json-render-diagnostics > "$OUT/build.json"; then
  if [ ${#TESTS[@]} -gt 2 ] && cargo test --release --test bench --no-run --message-format=json-render-diagnostics > "$OUT/build.json"; then
    note "tests/host_runtime.rs or tests/host_stress.rs does not build (errors above): their benches are skipped"
  else
    echo "bench: release build failed" >&2
    exit 1
  fi
fi
T_RUN=$(date +%s.%N)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)   # after the build: what the benchmarks compete with
echo "bench: build took $(awk -v a="$T_BUILD" -v b="$T_RUN" 'BEGIN{printf "%.0f", b-a}') s"


# ---- clean-up of namespaces a killed bench process left behind -------------------------------
cleanup_netns() {
  local ns pid
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^fdt-bench-.*-[0-9]+$'); do
    pid=${ns##*-}
    kill -0 "$pid" 2>/dev/null && continue          # its bench process still runs
    note "removing leftover namespace $ns (bench process $pid is gone)"
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
}

CTR_BASE=$OUT/containerd
CTR_SOCK=/run/faultd-bench/containerd.sock
CTR_UP=
stop_ctr() {
  if [ -n "$CTR_UP" ]; then
    CTR_UP=
    CTR_SOCK=$CTR_SOCK bash tests/env/ctr/stop-containerd.sh "$CTR_BASE" >> "$OUT/containerd-stop.log" 2>&1
  fi
}
trap 'stop_ctr; cleanup_netns' EXIT
trap 'echo "bench: interrupted" >&2; exit 130' INT TERM
cleanup_netns

# ---- 2. faultd's own benchmarks -------------------------------------------------------------
BENCH_EXE=$(exe_of bench)
if [ -z "$BENCH_EXE" ]; then
  fail "no bench executable in cargo's output"
else
  echo "bench: running $(basename "$BENCH_EXE") ($MODE sizes)"
  "$BENCH_EXE" --ignored --nocapture --test-threads=1 2>&1 | tee "$OUT/bench.log"
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || fail "tests/bench.rs (rc=$rc, log: target/bench/bench.log)"
fi

# ---- 3. other engineers' bench tests (PID resolution, stressors) -----------------------------
start_ctr() {
  [ -n "$CTR_UP" ] && return 0
  if ! command -v containerd >/dev/null || ! command -v ctr >/dev/null; then
    note "containerd/ctr not installed: $1 skipped"; return 1
  fi
  if ! CTR_SOCK=$CTR_SOCK bash tests/env/ctr/start-containerd.sh "$CTR_BASE" > "$OUT/containerd-start.log" 2>&1; then
    note "private containerd did not start (target/bench/containerd-start.log): $1 skipped"; return 1
  fi
  CTR_UP=1
  if ! CTR_SOCK=$CTR_SOCK bash tests/env/ctr/import-image.sh >> "$OUT/containerd-start.log" 2>&1; then
    note "test image import failed (target/bench/containerd-start.log): $1 skipped"; return 1
  fi
}
ctr_env=(env FAULTD_TEST_CTR_SOCK="$CTR_SOCK" FAULTD_TEST_IMAGE=docker.io/library/testbox:latest
         FAULTD_TEST_IMAGE_TAR="$ROOT/tests/env/cache/testbox.tar")

# run_benches NAME LOG: every ignored test of tests/NAME.rs whose name contains "bench"
run_benches() {
  local name=$1 log=$2 exe tests t rc
  exe=$(exe_of "$name")
  [ -n "$exe" ] || { fail "no $name executable in cargo's output"; return; }
  tests=$("$exe" --ignored --list --format terse 2>/dev/null | sed -n 's/: test$//p' | grep bench)
  [ -n "$tests" ] || { note "tests/$name.rs has no bench test yet: skipped"; return; }
  start_ctr "tests/$name.rs benches" || return
  for t in $tests; do
    echo "bench: running $name $t"
    echo "=== $t" >> "$log"
    "${ctr_env[@]}" "$exe" "$t" --exact --ignored --nocapture --test-threads=1 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || fail "$name $t (rc=$rc, log: ${log#"$ROOT"/})"
  done
}

if [ -f tests/host_runtime.rs ]; then run_benches host_runtime "$OUT/pid.log"
else note "tests/host_runtime.rs does not exist: PID resolution skipped"; fi
if [ ! -f tests/host_stress.rs ]; then
  note "tests/host_stress.rs does not exist yet: ExecStressors/CPU accuracy skipped"
elif [ "$MODE" = smoke ] && [ "${FAULTD_BENCH_STRESS:-}" != 1 ]; then
  note "ExecStressors/CPU accuracy (host_stress bench, ~25 s) skipped in --smoke (FAULTD_BENCH_STRESS=1 runs it)"
else
  run_benches host_stress "$OUT/stress.log"
fi
stop_ctr
cleanup_netns
T_END=$(date +%s.%N)

# ---- 4. table and JSON ----------------------------------------------------------------------
BIN=$(dirname "$(dirname "${BENCH_EXE:-$ROOT/target/release/deps/x}")")/faultd
python3 - "$OUT" "$MODE" "$FAIL" "$T_BUILD" "$T_RUN" "$T_END" "$BIN" "$LOAD_BEFORE" <<'PY'
import json, os, re, subprocess, sys, time
out, mode, fail, t_build, t_run, t_end, binary, load_before = sys.argv[1:9]

def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""

def read(path):
    try:
        return open(path, errors="replace").read().splitlines()
    except OSError:
        return []

model = next((l.split(":", 1)[1].strip() for l in read("/proc/cpuinfo") if l.startswith("model name")), "?")
mem_kb = next((int(l.split()[1]) for l in read("/proc/meminfo") if l.startswith("MemTotal:")), 0)
machine = {
    "nproc": int(sh("nproc") or 0),
    "cpu_model": model,
    "mem_gib": round(mem_kb / 1048576, 1),
    "kernel": sh("uname", "-r"),
    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "rustc": sh("rustc", "--version"),
    "commit": sh("git", "rev-parse", "--short", "HEAD") + (" (dirty)" if sh("git", "status", "--porcelain", "--untracked-files=no") else ""),
    "bench_dir_fs": sh("stat", "-f", "-c", "%T", os.environ.get("FAULTD_BENCH_DIR", "/tmp")),
    "loadavg_before": load_before,
    "loadavg_after": " ".join(open("/proc/loadavg").read().split()[:3]),
}
sizes = {k: os.environ[k] for k in sorted(os.environ) if k.startswith("FAULTD_BENCH_")}

rows, notes = [], [l.removeprefix("bench: ") for l in read(os.path.join(out, "notes.txt")) if l]

# libtest prints "test NAME ... " without a newline: a BENCH line may follow it on the same line
BENCH = re.compile(r"(?:^|\s)BENCH (.*)$")
def bench_lines(path, source):
    for line in read(path):
        m = BENCH.search(line.rstrip("\r"))
        if not m:
            continue
        body = m.group(1).strip()
        try:
            r = json.loads(body)
            if isinstance(r, dict) and "metric" in r:
                r.setdefault("source", source)
                rows.append(r)
                continue
        except ValueError:
            pass
        notes.append(f"{source}: {line}")

bench_lines(os.path.join(out, "bench.log"), "tests/bench.rs")

# host_runtime's bench_pid_resolution prints Debug durations:
#   pid via containerd Tasks.Get (1000x): p50 512.3µs p99 1.2ms
UNITS = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}
def dur_ms(s):
    m = re.fullmatch(r"([0-9.]+)(ns|µs|us|ms|s)", s)
    return float(m.group(1)) * UNITS[m.group(2)] if m else None

pid = {}
for line in read(os.path.join(out, "pid.log")):
    m = re.search(r"pid via (.+?) \((\d+)x\):\s+p50 (\S+) p99 (\S+)", line)
    if m:
        pid[m.group(1)] = (int(m.group(2)), dur_ms(m.group(3)), dur_ms(m.group(4)))
bench_lines(os.path.join(out, "pid.log"), "tests/host_runtime.rs")
def pid_row(rid, metric, key, q, base_key=None):
    if key not in pid:
        return
    i = 1 if q == "p50" else 2
    r = {"id": rid, "metric": metric, "unit": "ms", "faultd": pid[key][i], "baseline": None,
         "baseline_name": None, "ratio": None, "target": None, "met": None,
         "extra": {"samples": pid[key][0]}, "source": "tests/host_runtime.rs bench_pid_resolution"}
    if base_key in pid and pid[key][i]:
        r["baseline"], r["baseline_name"] = pid[base_key][i], f"{base_key} every time"
        r["ratio"] = round(pid[base_key][i] / pid[key][i], 2)
    rows.append(r)
pid_row("pid_cache_p50", "container PID resolution p50, cache", "cache", "p50", "containerd Tasks.Get")
pid_row("pid_cache_p99", "container PID resolution p99, cache", "cache", "p99", "containerd Tasks.Get")
pid_row("pid_runtime_p50", "container PID resolution p50, runtime (containerd)", "containerd Tasks.Get", "p50")
pid_row("pid_runtime_p99", "container PID resolution p99, runtime (containerd)", "containerd Tasks.Get", "p99")
pid_row("pid_procscan_p50", "container PID resolution p50, /proc cgroup scan fallback", "/proc cgroup scan", "p50")

# host_stress: JSON BENCH lines become rows; bench_cpu_accuracy_against_stress_ng's table
#   load | faultd RPC | faultd to load | faultd CPU (err)  | stress-ng to load | stress-ng CPU (err)
#    50% |      3.1 ms |        61.0 ms | 0.497 (-0.003) |           58.2 ms | 0.501 (+0.001)
# becomes rows too; other result lines are kept as notes
bench_lines(os.path.join(out, "stress.log"), "tests/host_stress.rs")
src = "tests/host_stress.rs bench_cpu_accuracy_against_stress_ng"
num = r"([0-9.]+)"
cpu_re = re.compile(rf"(?:^|\s)(\d+)% \|\s*{num} ms \|\s*{num} ms \|\s*{num} \(([-+][0-9.]+)\) \|\s*{num} ms \|\s*{num} \(([-+][0-9.]+)\)")
for line in read(os.path.join(out, "stress.log")):
    m = cpu_re.search(line)
    if m:
        load, rpc, ready, ours, oerr, ngready, theirs, terr = m.groups()
        oerr, terr = abs(float(oerr)), abs(float(terr))
        base = {"baseline_name": "stress-ng in the same cgroup", "source": src}
        rows.append(dict(base, id=f"stress_cpu{load}_error", unit="cores",
            metric=f"ExecStressors CPU {load}%: |measured - requested|",
            faultd=oerr, baseline=terr, ratio=round(terr / oerr, 2) if oerr else None,
            target="<= 0.05 cores", met=oerr <= 0.05,
            extra={"measured": float(ours), "stress_ng_measured": float(theirs), "rpc_ms": float(rpc)}))
        rows.append(dict(base, id=f"stress_cpu{load}_to_load", unit="ms",
            metric=f"ExecStressors CPU {load}%: request to load",
            faultd=float(ready), baseline=float(ngready),
            ratio=round(float(ngready) / float(ready), 2) if float(ready) else None,
            target=None, met=None, extra={"rpc_ms": float(rpc)}))
    elif not BENCH.search(line) and not line.startswith(("load |", "=== ", "test ", "running ")) and re.search(r"p50|p99|accuracy|stress-ng|took", line, re.I):
        notes.append("tests/host_stress.rs: " + line.strip())

# groups in README order; within a group, the order the tests printed
ORDER = ["settcs_", "journal_fdatasync", "fanout_", "journal_", "ready_", "idle_rss", "rss_",
         "read_rpc", "binary_", "pid_", "stress_", "time_", "http_", "io_"]
rows.sort(key=lambda r: next((i for i, p in enumerate(ORDER) if str(r.get("id", "")).startswith(p)), len(ORDER)))

def fmt(v, unit=""):
    if v is None:
        return "-"
    if unit == "ms" and 0 < abs(v) < 0.1:
        v, unit = v * 1e3, "µs"
    if isinstance(v, float) and not v.is_integer():
        s = f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}" if abs(v) < 1000 else f"{v:.0f}"
    else:
        s = str(int(v)) if isinstance(v, (int, float)) else str(v)
    return f"{s} {unit}".strip()

table = [("metric", "faultd", "baseline", "ratio", "target", "met?")]
for r in rows:
    u = r.get("unit") or ""
    met = r.get("met")
    table.append((
        r["metric"], fmt(r.get("faultd"), u), fmt(r.get("baseline"), u),
        "-" if r.get("ratio") is None else f"{r['ratio']:.1f}x",
        r.get("target") or "-", "-" if met is None else ("yes" if met else "NO")))
w = [max(len(row[i]) for row in table) for i in range(6)]
print()
print(f"faultd benchmarks ({mode}); ratio = baseline / faultd (> 1: faultd faster or smaller)")
for i, row in enumerate(table):
    print("  ".join(c.ljust(w[j]) if j == 0 else c.rjust(w[j]) for j, c in enumerate(row)).rstrip())
    if i == 0:
        print("  ".join("-" * x for x in w))
m = machine
print(f"\nmachine: {m['nproc']} x {m['cpu_model']}, {m['mem_gib']} GiB, Linux {m['kernel']}, "
      f"{m['date']}, {m['rustc']}, commit {m['commit']}, bench dir on {m['bench_dir_fs']}, "
      f"load average {m['loadavg_before']} before / {m['loadavg_after']} after")
for n in notes:
    print("note:", n)

try:
    bin_size = os.path.getsize(binary)
except OSError:
    bin_size = None
doc = {"mode": mode, "ok": fail == "0", "machine": machine, "sizes": sizes,
       "build_s": round(float(t_run) - float(t_build), 1), "run_s": round(float(t_end) - float(t_run), 1),
       "binary": {"path": binary, "bytes": bin_size}, "rows": rows, "notes": notes}
path = os.path.join(out, "latest.json")
with open(path + ".tmp", "w") as f:
    json.dump(doc, f, indent=1, ensure_ascii=False)
    f.write("\n")
os.replace(path + ".tmp", path)
print(f"\nrun took {doc['run_s']} s after a {doc['build_s']} s build; JSON: {os.path.relpath(path)}")
PY
prc=$?
[ "$prc" -eq 0 ] || fail "report (python rc=$prc)"
if [ "$FAIL" -ne 0 ]; then echo "bench: FAILED (see above)"; exit 1; fi
echo "bench: ok"
