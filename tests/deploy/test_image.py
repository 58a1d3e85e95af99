"""The container image, checked without a container engine.

The Dockerfile is parsed and every file it copies is checked against the repository (build
context, .dockerignore) and against the build output (`cargo build --release` must have produced
target/release/faultd). The runtime filesystem is then assembled into a temporary directory by
deploy/image/assemble-rootfs.sh, the script the Dockerfile runs, from this Debian 12 host's
libraries (the image's rootfs stage is debian:bookworm-slim, the same release). Its contents and
size are listed in the terminal summary and in tests/env/cache/deploy/image-contents.txt. The
image has no `nft` and no nftables libraries (partitions use nf_tables netlink). As root, the
assembled filesystem is also run: faultd starts under chroot with the Chaos Mesh chart's command
line and answers /readyz and an mTLS handshake.
"""
from __future__ import annotations

import fnmatch
import io
import json
import os
import shlex
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import DEPLOY, IMAGE_REPORT, REPO, REPORT_DIR

DOCKERFILE = REPO / "Dockerfile"
FAULTD_BIN = REPO / "target" / "release" / "faultd"
ASSEMBLE = DEPLOY / "image" / "assemble-rootfs.sh"
IS_ROOT = os.geteuid() == 0


# --- Dockerfile parsing ----------------------------------------------------------------------

def parse_dockerfile(text: str) -> list[dict]:
    """Stages as {"base", "name", "instructions": [(INSTR, args)]}; continuation lines joined."""
    logical, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue  # comment inside a continued instruction
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    stages: list[dict] = []
    for line in logical:
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) >= 3 and parts[1].lower() == "as" else None
            stages.append({"base": parts[0], "name": name, "instructions": []})
        else:
            assert stages, f"instruction before FROM: {line}"
            stages[-1]["instructions"].append((instr, args.strip()))
    return stages


def copy_args(args: str) -> tuple[dict, list[str], str]:
    words = shlex.split(args)
    opts = {}
    while words and words[0].startswith("--"):
        k, _, v = words.pop(0)[2:].partition("=")
        opts[k] = v
    return opts, words[:-1], words[-1]


def dockerignore_patterns() -> list[str]:
    pats = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            assert not line.startswith("!"), "exceptions are not supported by this check"
            pats.append(line.rstrip("/"))
    return pats


def ignored(rel: str, patterns: list[str]) -> bool:
    parts = rel.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pat in patterns:
        pat = pat.lstrip("/")
        for p in prefixes:
            if fnmatch.fnmatchcase(p, pat):
                return True
            if pat.startswith("**/") and fnmatch.fnmatchcase(p.split("/")[-1], pat[3:]):
                return True
    return False


@pytest.fixture(scope="module")
def stages():
    return parse_dockerfile(DOCKERFILE.read_text())


def stage(stages, name):
    return next(s for s in stages if s["name"] == name)


def workdir(st) -> str:
    w = [a for i, a in st["instructions"] if i == "WORKDIR"]
    return w[-1] if w else "/"


# --- Dockerfile ------------------------------------------------------------------------------

def test_stages(stages):
    assert [s["name"] for s in stages] == ["builder", "rootfs", None]
    builder, rootfs, final = stages
    assert builder["base"] == "rust:1-bookworm"
    runs = " ".join(a for i, a in builder["instructions"] if i == "RUN")
    assert "cargo build --release --locked" in runs
    assert rootfs["base"] == "debian:bookworm-slim"
    runs = " ".join(a for i, a in rootfs["instructions"] if i == "RUN")
    assert "nftables" not in runs and "apt-get" not in runs, "no nft in the image"
    assert "assemble-rootfs.sh /staging/faultd /rootfs" in runs
    assert final["base"] == "scratch"
    instrs = {i for i, _ in final["instructions"]}
    assert "RUN" not in instrs, "the runtime image has no shell to run anything with"
    copies = [copy_args(a) for i, a in final["instructions"] if i == "COPY"]
    assert copies == [({"from": "rootfs"}, ["/rootfs/"], "/")]
    assert ("ENTRYPOINT", '["/usr/local/bin/faultd"]') in final["instructions"]
    exposed = {p for i, a in final["instructions"] if i == "EXPOSE" for p in a.split()}
    assert exposed == {"31767", "31766"}
    labels = " ".join(a for i, a in final["instructions"] if i == "LABEL")
    assert "org.opencontainers.image.title" in labels
    version = next(l for l in (REPO / "Cargo.toml").read_text().splitlines()
                   if l.startswith("version = ")).split('"')[1]
    assert f'org.opencontainers.image.version="{version}"' in labels


def test_context_copies_exist_and_are_not_dockerignored(stages):
    patterns = dockerignore_patterns()
    for must in ("target", "tests/env/cache", ".git"):
        assert must in patterns, f".dockerignore should exclude {must}"
    for st in stages:
        for instr, args in st["instructions"]:
            if instr not in ("COPY", "ADD"):
                continue
            opts, srcs, _ = copy_args(args)
            if "from" in opts:
                continue
            for src in srcs:
                if src.startswith("https://"):
                    assert instr == "ADD", f"{instr} {src}: only ADD fetches URLs"
                    continue
                path = REPO / src
                assert path.exists(), f"COPY {src}: not in the repository"
                assert not ignored(src, patterns), f"COPY {src}: excluded by .dockerignore"


def test_builder_outputs_exist(stages):
    """COPY --from=builder sources, mapped from the builder's WORKDIR to this checkout."""
    wd = workdir(stage(stages, "builder")).rstrip("/") + "/"
    copied = []
    for st in stages:
        for instr, args in st["instructions"]:
            if instr != "COPY":
                continue
            opts, srcs, _ = copy_args(args)
            if opts.get("from") != "builder":
                continue
            for src in srcs:
                assert src.startswith(wd), f"{src} is outside the builder's WORKDIR {wd}"
                copied.append(REPO / src[len(wd):])
    assert copied == [FAULTD_BIN]
    assert FAULTD_BIN.is_file(), (
        f"{FAULTD_BIN.relative_to(REPO)} does not exist: run `cargo build --release` first "
        "(the Dockerfile's builder stage produces it at the same path)")
    assert os.access(FAULTD_BIN, os.X_OK)


# --- the assembled filesystem ----------------------------------------------------------------

def _elf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory):
    if not FAULTD_BIN.is_file():
        pytest.fail(f"{FAULTD_BIN.relative_to(REPO)} does not exist: run `cargo build --release` first")
    dest = tmp_path_factory.mktemp("image") / "rootfs"
    out = subprocess.run(["sh", str(ASSEMBLE), str(FAULTD_BIN), str(dest)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"assemble-rootfs.sh failed:\n{out.stderr}"
    return dest


def listing(root: Path) -> list[tuple[str, str, int, str]]:
    """(path, type, size, link target) for everything under root, sorted."""
    rows = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in sorted(dirnames + filenames):
            p = Path(dirpath) / n
            rel = "/" + str(p.relative_to(root))
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                rows.append((rel, "link", 0, os.readlink(p)))
            elif stat.S_ISDIR(st.st_mode):
                rows.append((rel, "dir", 0, ""))
            else:
                rows.append((rel, "file", st.st_size, ""))
    return sorted(rows)


EXPECTED_FILES = {
    "/usr/local/bin/faultd", "/lib64/ld-linux-x86-64.so.2", "/etc/passwd", "/etc/group",
}
EXPECTED_LINKS = {
    "/usr/local/bin/chaos-daemon": "faultd",
    "/run/containerd": "/host-run/containerd",
    "/run/k3s": "/host-run/k3s",
    "/run/crio": "/host-run/crio",
    "/run/docker.sock": "/host-run/docker.sock",
    "/run/netns": "/host-run/netns",
    "/var/run": "/run",
}
LIB_DIR = "/lib/x86_64-linux-gnu"


def test_image_contents(rootfs):
    rows = listing(rootfs)
    files = {r[0]: r for r in rows if r[1] == "file"}
    links = {r[0]: r[3] for r in rows if r[1] == "link"}
    assert links == EXPECTED_LINKS
    libs = {p for p in files if p.startswith(LIB_DIR + "/")}
    assert set(files) == EXPECTED_FILES | libs, f"unexpected files: {set(files) - EXPECTED_FILES - libs}"
    # faultd's libraries, nothing else: glibc and libgcc_s; no nft, no nftables libraries.
    names = {Path(p).name for p in libs}
    assert {"libc.so.6", "libgcc_s.so.1"} <= names
    assert not names & {"libnftables.so.1", "libnftnl.so.11", "libmnl.so.0", "libxtables.so.12",
                        "libjansson.so.4", "libgmp.so.10", "libedit.so.2"}, names
    assert not (rootfs / "usr/sbin/nft").exists()
    assert (rootfs / "usr/local/bin/faultd").read_bytes() == FAULTD_BIN.read_bytes()
    assert os.stat(rootfs / "usr/local/bin/faultd").st_mode & 0o777 == 0o755
    assert (rootfs / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert (rootfs / "var/lib/faultd").is_dir()
    assert not (rootfs / "bin/sh").exists() and not (rootfs / "usr/bin").exists(), "no shell"
    assert (rootfs / "etc/passwd").read_text().startswith("root:x:0:0:")

    # Every ELF's DT_NEEDED libraries are in the image (sonames from the host's ldd).
    for path in files:
        p = rootfs / path.lstrip("/")
        if not _elf(p) or path.startswith("/lib64/"):
            continue
        out = subprocess.run(["ldd", str(p)], capture_output=True, text=True)
        for line in out.stdout.splitlines():
            soname = line.split()[0]
            if "=>" in line and not soname.startswith("linux-vdso"):
                assert f"{LIB_DIR}/{soname}" in files, f"{path} needs {soname}, not in the image"

    # Size: what the image holds, and roughly what a registry stores (gzip'd layer).
    total = sum(r[2] for r in rows)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        tar.add(rootfs, arcname="/")
    report = ["path                                         type      bytes  target"]
    for path, kind, size, target in rows:
        report.append(f"{path:<44} {kind:<5} {size:>10}  {target}")
    report.append(f"total: {total} bytes ({total / 2**20:.1f} MiB) in {len(files)} files, "
                  f"{len(links)} symlinks; gzip'd layer {len(buf.getvalue()) / 2**20:.1f} MiB")
    faultd_size = files["/usr/local/bin/faultd"][2]
    libs_size = sum(files[p][2] for p in libs) + files["/lib64/ld-linux-x86-64.so.2"][2]
    report.append(f"faultd {faultd_size / 2**20:.1f} MiB, shared libraries {libs_size / 2**20:.1f} MiB")
    try:
        REPORT_DIR.mkdir(parents=True, exist_ok=True)
        (REPORT_DIR / "image-contents.txt").write_text("\n".join(report) + "\n")
    except OSError as e:
        report.append(f"(not written to {REPORT_DIR}: {e})")
    IMAGE_REPORT.extend(report)
    assert total < 40 * 2**20, "the runtime image grew past 40 MiB"


needs_root = pytest.mark.skipif(not IS_ROOT, reason="running the image filesystem needs root (chroot)")


@pytest.fixture
def scratch_rootfs(rootfs, tmp_path):
    """A private copy of the assembled filesystem for tests that add files to it."""
    dest = tmp_path / "rootfs"
    shutil.copytree(rootfs, dest, symlinks=True)
    return dest


@needs_root
def test_binaries_run_in_the_image(rootfs):
    out = subprocess.run(["chroot", str(rootfs), "/usr/local/bin/chaos-daemon", "--version"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("faultd ")


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _issue(cwd: Path, name: str, cn: str, eku: str):
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=cwd)
    sans = f"DNS:{cn}" + (",DNS:localhost" if eku == "serverAuth" else "")
    (cwd / f"{name}.ext").write_text(f"subjectAltName={sans}\nextendedKeyUsage={eku}\n"
                                     "basicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "1", "-out", f"{name}.crt", "-extfile", f"{name}.ext",
             cwd=cwd)


@needs_root
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_faultd_starts_from_the_image_with_the_charts_command_line(scratch_rootfs, tmp_path):
    """chroot into the assembled filesystem (host /proc mounted, as hostPID gives it) and start
    /usr/local/bin/chaos-daemon with the flags Chaos Mesh's chart passes; ports 0 and
    FAULTD_LISTEN_ADDRESS=127.0.0.1 keep it to ephemeral loopback ports."""
    rootfs = scratch_rootfs
    pki = tmp_path / "pki"
    pki.mkdir()
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=faultd-test-ca", "-days", "1",
             cwd=pki)
    _issue(pki, "tls", "chaos-daemon.chaos-mesh.org", "serverAuth")
    _issue(pki, "client", "controller-manager.chaos-mesh.org", "clientAuth")
    cert_dir = rootfs / "etc/chaos-daemon/cert"
    cert_dir.mkdir(parents=True, exist_ok=True)
    for f in ("ca.crt", "tls.crt", "tls.key"):
        shutil.copy(pki / f, cert_dir / f)
    (rootfs / "proc").mkdir(exist_ok=True)
    state = rootfs / "var/lib/faultd"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir()

    command = ["/usr/local/bin/chaos-daemon", "--runtime", "containerd", "--http-port", "0",
               "--grpc-port", "0", "--pprof",
               "--ca", "/etc/chaos-daemon/cert/ca.crt", "--cert", "/etc/chaos-daemon/cert/tls.crt",
               "--key", "/etc/chaos-daemon/cert/tls.key",
               "--runtime-socket-path", "/host-run/containerd.sock"]
    r = shlex.quote(str(rootfs))
    script = (f"mount -t proc proc {r}/proc && exec chroot {r} "
              + " ".join(shlex.quote(a) for a in command))
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TZ": "UTC",
           "FAULTD_LISTEN_ADDRESS": "127.0.0.1", "FAULTD_LOG_FORMAT": "json"}
    log_path = tmp_path / "faultd.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        http_addr = grpc_addr = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and http_addr is None:
            assert proc.poll() is None, f"faultd exited {proc.returncode}:\n{log_path.read_text()}"
            for line in log_path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                f = rec.get("fields", {})
                if f.get("message") == "faultd serving":
                    http_addr, grpc_addr = f["http_addr"], f["grpc_addr"]
                    assert f["tls"] is True
            time.sleep(0.1)
        assert http_addr, f"faultd did not start serving:\n{log_path.read_text()}"

        status = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{http_addr}/readyz", timeout=2) as resp:
                    status = resp.status
                    break
            except OSError:
                time.sleep(0.2)
        assert status == 200, f"/readyz never answered 200:\n{log_path.read_text()}"
        with urllib.request.urlopen(f"http://{http_addr}/healthz", timeout=2) as resp:
            assert resp.status == 200

        # mTLS as Chaos Mesh's controller does it: verify the server as
        # chaos-daemon.chaos-mesh.org, present the client certificate, TLS 1.3, ALPN h2.
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
        ctx.set_alpn_protocols(["h2"])
        host, port = grpc_addr.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="chaos-daemon.chaos-mesh.org") as tls:
                assert tls.version() == "TLSv1.3"
                assert tls.selected_alpn_protocol() == "h2"
        assert any(state.iterdir()), "the journal was not created under --state-dir"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == 0, f"faultd exited {proc.returncode} on SIGTERM:\n{log_path.read_text()}"


def test_byteman_jars_ship_without_a_jre(stages, tmp_path):
    """JVMChaos: the rootfs stage fetches Chaos Mesh's Byteman distribution and passes its jars
    to assemble-rootfs.sh, which puts them (and only them, with their licence) under
    /opt/faultd/byteman (faultd's --byteman-dir default); nothing of a JRE is in the image."""
    rootfs_stage = stage(stages, "rootfs")
    adds = [copy_args(a) for i, a in rootfs_stage["instructions"] if i == "ADD"]
    assert any(src.startswith("https://mirrors.chaos-mesh.org/") and src.endswith(".tar.gz")
               for _, srcs, _ in adds for src in srcs), adds
    runs = " ".join(a for i, a in rootfs_stage["instructions"] if i == "RUN")
    assert "assemble-rootfs.sh /staging/faultd /rootfs /staging/byteman" in runs
    if not FAULTD_BIN.is_file():
        pytest.fail(f"{FAULTD_BIN.relative_to(REPO)} does not exist: run `cargo build --release` first")
    jars = tmp_path / "byteman"
    jars.mkdir()
    (jars / "byteman.jar").write_bytes(b"PK\x03\x04 agent")
    (jars / "byteman-helper.jar").write_bytes(b"PK\x03\x04 helper")
    (jars / "LICENSE.txt").write_text("LGPL-2.1")
    (jars / "README").write_text("not copied")
    dest = tmp_path / "rootfs"
    out = subprocess.run(["sh", str(ASSEMBLE), str(FAULTD_BIN), str(dest), str(jars)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    shipped = sorted(p.name for p in (dest / "opt/faultd/byteman").iterdir())
    assert shipped == ["LICENSE.txt", "byteman-helper.jar", "byteman.jar"], shipped
    for p in dest.rglob("*"):
        assert p.name not in ("java", "libjvm.so", "rt.jar", "modules"), f"JRE file in the image: {p}"
    # Without a byteman.jar the assembly fails instead of shipping a JVMChaos that cannot work.
    (jars / "byteman.jar").unlink()
    out = subprocess.run(["sh", str(ASSEMBLE), str(FAULTD_BIN), str(tmp_path / "r2"), str(jars)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "byteman.jar" in out.stderr
