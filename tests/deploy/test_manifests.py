"""Kubernetes manifests in deploy/: rendering, schemas, and the Chaos Mesh compatibility points.

Every overlay is rendered with kustomize_lite (and, when kubectl is installed, compared with
`kubectl kustomize`), every object is validated against Kubernetes' OpenAPI schemas (offline, from
kubernetes-validate, strict: unknown fields are errors), and the contract with Chaos Mesh's
controller-manager is asserted field by field.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

import kustomize_lite
from conftest import DEPLOY, OVERLAYS, REPO, kubectl_kustomize

# Oldest Kubernetes minor still commonly deployed, the reference version, and the newest the
# schema package ships.
K8S_VERSIONS = ["1.27", "1.30", latest_version()]

GRPC_PORT, HTTP_PORT = 31767, 31766
CERT_DIR = "/etc/chaos-daemon/cert"
CHAOS_MESH_ARGS = [
    "--ca", f"{CERT_DIR}/ca.crt",
    "--cert", f"{CERT_DIR}/tls.crt",
    "--key", f"{CERT_DIR}/tls.key",
    "--runtime", "containerd",
    "--runtime-socket-path", "/host-run/containerd.sock",
    "--grpc-port", "31767",
    "--http-port", "31766",
]
# The capabilities faultd is granted instead of `privileged`, each explained in
# deploy/base/daemonset.yaml and deploy/README.md.
CAPABILITIES = {"NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE", "SYS_CHROOT", "KILL", "SYS_RESOURCE",
                "SETPCAP"}
SECRET_NAMES = {"default": "faultd-certs", "chaos-mesh": "chaos-mesh-daemon-certs",
                "cert-manager": "chaos-mesh-daemon-certs"}
NAMESPACES = {"default": "faultd", "chaos-mesh": "chaos-mesh", "cert-manager": "chaos-mesh"}
SERVICE_NAMES = {"default": "faultd", "chaos-mesh": "chaos-daemon", "cert-manager": "chaos-daemon"}
HELM = DEPLOY / "helm"
CHART_FIXTURE = Path(__file__).parent / "fixtures" / "chart-daemon-rendered.yaml"


# --- helpers ---------------------------------------------------------------------------------

def one(objs, kind, name=None):
    hits = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


def pod_spec(objs, name=None):
    return one(objs, "DaemonSet", name)["spec"]["template"]["spec"]


def container(objs, ds_name=None, name=None):
    spec = pod_spec(objs, ds_name)
    cs = spec["containers"]
    if name is None:
        assert len(cs) == 1, "the DaemonSet should run exactly one container"
        return cs[0]
    return next(c for c in cs if c["name"] == name)


def env_of(c) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def flag_value(args: list[str], flag: str) -> str:
    assert args.count(flag) == 1, f"{flag} appears {args.count(flag)} times in {args}"
    return args[args.index(flag) + 1]


def mounts_by_path(c) -> dict[str, dict]:
    return {m["mountPath"]: m for m in c.get("volumeMounts", [])}


def volume(spec, name) -> dict:
    return next(v for v in spec["volumes"] if v["name"] == name)


def parse_duration_s(s: str) -> float:
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", s)
    assert m and s, f"bad duration {s!r}"
    h, mi, se = (int(x or 0) for x in m.groups())
    return h * 3600 + mi * 60 + se


def faultd_flags() -> dict[str, str]:
    """`--flag` -> FAULTD_* environment variable, read from src/config.rs."""
    text = (REPO / "src" / "config.rs").read_text()
    found = re.findall(r'#\[arg\(long, env = "(FAULTD_[A-Z0-9_]+)"[^\]]*\)\]\s*pub (\w+):', text)
    assert len(found) >= 15, "could not read faultd's flags from src/config.rs"
    return {"--" + field.replace("_", "-"): env for env, field in found}


def cargo_version() -> str:
    m = re.search(r'^version = "([^"]+)"', (REPO / "Cargo.toml").read_text(), re.M)
    assert m
    return m.group(1)


def render_postrender(tmp: Path) -> list[dict]:
    """The post-renderer's kustomization over the chart fixture, as post-render.sh lays it out."""
    for f in ("kustomization.yaml", "daemonset-patch.yaml"):
        shutil.copy(HELM / "post-render" / f, tmp / f)
    shutil.copy(CHART_FIXTURE, tmp / "chart.yaml")
    return kustomize_lite.build(tmp)


# --- rendering -------------------------------------------------------------------------------

def test_every_overlay_renders(rendered):
    for name, objs in rendered.items():
        kinds = sorted(o["kind"] for o in objs)
        assert "DaemonSet" in kinds and "Service" in kinds and "ServiceAccount" in kinds, (name, kinds)
    assert sorted(p.name for p in (DEPLOY / "overlays").iterdir()) == sorted(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renderer_matches_kubectl_kustomize(rendered, overlay):
    theirs = kubectl_kustomize(DEPLOY / "overlays" / overlay)
    if theirs is None:
        pytest.skip("kubectl not installed: kustomize_lite output not cross-checked")
    ours = {kustomize_lite.object_key(o): o for o in rendered[overlay]}
    theirs = {kustomize_lite.object_key(o): o for o in theirs}
    assert sorted(ours, key=str) == sorted(theirs, key=str)
    for k in ours:
        assert ours[k] == theirs[k], f"{overlay}: {k} differs from kubectl kustomize"


def test_postrender_renderer_matches_kubectl(tmp_path):
    ours = render_postrender(tmp_path)
    theirs = kubectl_kustomize(tmp_path)
    if theirs is None:
        pytest.skip("kubectl not installed: kustomize_lite output not cross-checked")
    assert {kustomize_lite.object_key(o): o for o in ours} == {
        kustomize_lite.object_key(o): o for o in theirs
    }


# --- schemas ---------------------------------------------------------------------------------

def _validate(obj, version):
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid for Kubernetes {version}: "
                    f"{path}: {e.message}")


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_objects_match_kubernetes_schemas(rendered, overlay, version):
    for o in rendered[overlay]:
        if o["apiVersion"].startswith("cert-manager.io/"):
            continue  # no schema in kubernetes-validate: test_cert_manager_objects checks them
        _validate(o, version)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_postrender_output_and_examples_match_schemas(tmp_path, version):
    for o in render_postrender(tmp_path):
        _validate(o, version)
    for o in kustomize_lite.load_yaml_docs(DEPLOY / "base" / "certs-secret.example.yaml"):
        _validate(o, version)


CERT_SPEC_FIELDS = {
    "secretName", "secretTemplate", "commonName", "dnsNames", "ipAddresses", "uris",
    "emailAddresses", "duration", "renewBefore", "renewBeforePercentage", "usages", "privateKey",
    "issuerRef", "isCA", "subject", "keystores", "encodeUsagesInRequest", "revisionHistoryLimit",
    "additionalOutputFormats", "literalSubject", "nameConstraints", "otherNames",
    "signatureAlgorithm",
}
KEY_USAGES = {
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
    "server auth", "client auth", "code signing", "email protection", "s/mime", "ipsec end system",
    "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc",
}


def test_cert_manager_objects(rendered):
    """Shape check of the cert-manager.io/v1 objects (no OpenAPI schema is available offline)."""
    objs = rendered["cert-manager"]
    cm = [o for o in objs if o["apiVersion"].startswith("cert-manager.io/")]
    assert {o["kind"] for o in cm} == {"Issuer", "Certificate"}
    for o in cm:
        assert o["apiVersion"] == "cert-manager.io/v1"
        assert o["metadata"]["namespace"] == "chaos-mesh"
    issuers = {o["metadata"]["name"]: o for o in cm if o["kind"] == "Issuer"}
    certs = {o["metadata"]["name"]: o for o in cm if o["kind"] == "Certificate"}
    for name, iss in issuers.items():
        kinds = set(iss["spec"]) & {"selfSigned", "ca", "acme", "vault", "venafi"}
        assert len(kinds) == 1 and set(iss["spec"]) == kinds, f"Issuer {name}: {iss['spec']}"
        if "ca" in iss["spec"]:
            ca_secret = iss["spec"]["ca"]["secretName"]
            ca_cert = [c for c in certs.values() if c["spec"]["secretName"] == ca_secret]
            assert len(ca_cert) == 1 and ca_cert[0]["spec"].get("isCA") is True
    for name, c in certs.items():
        spec = c["spec"]
        assert set(spec) <= CERT_SPEC_FIELDS, f"Certificate {name}: unknown {set(spec) - CERT_SPEC_FIELDS}"
        assert isinstance(spec["secretName"], str) and spec["secretName"]
        ref = spec["issuerRef"]
        assert ref["kind"] == "Issuer" and ref["name"] in issuers and ref.get("group") == "cert-manager.io"
        assert set(spec.get("usages", [])) <= KEY_USAGES
        pk = spec["privateKey"]
        assert set(pk) <= {"algorithm", "size", "encoding", "rotationPolicy"}
        assert pk["algorithm"] in {"RSA", "ECDSA", "Ed25519"}
        if pk["algorithm"] == "ECDSA":
            assert pk["size"] in {256, 384, 521}
        assert parse_duration_s(spec["renewBefore"]) < parse_duration_s(spec["duration"])

    server = next(c for c in certs.values() if c["spec"]["secretName"] == "chaos-mesh-daemon-certs")
    assert {"chaos-daemon.chaos-mesh.org", "localhost"} <= set(server["spec"]["dnsNames"])
    assert "server auth" in server["spec"]["usages"]
    client = next(c for c in certs.values()
                  if c["spec"]["secretName"] == "chaos-mesh-daemon-client-certs")
    assert "client auth" in client["spec"]["usages"]
    allowed = env_of(container(objs))["FAULTD_ALLOWED_CLIENT_NAMES"].split(",")
    assert set(client["spec"]["dnsNames"]) & set(allowed), "faultd would refuse the client cert"
    assert server["spec"]["issuerRef"]["name"] == client["spec"]["issuerRef"]["name"], (
        "server and client must share the CA that ca.crt carries")


# --- Chaos Mesh compatibility ----------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports(rendered, overlay):
    objs = rendered[overlay]
    c = container(objs)
    ports = {p["name"]: p for p in c["ports"]}
    assert ports["grpc"]["containerPort"] == GRPC_PORT
    assert ports["http"]["containerPort"] == HTTP_PORT
    assert "hostPort" not in ports["grpc"] and "hostPort" not in ports["http"]
    args = c["args"]
    assert flag_value(args, "--grpc-port") == str(GRPC_PORT)
    assert flag_value(args, "--http-port") == str(HTTP_PORT)

    svc = one(objs, "Service", SERVICE_NAMES[overlay])
    assert svc["spec"]["clusterIP"] == "None", "headless: one endpoint per node's daemon"
    sports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert (sports["grpc"]["port"], sports["grpc"]["targetPort"]) == (GRPC_PORT, "grpc")
    assert (sports["http"]["port"], sports["http"]["targetPort"]) == (HTTP_PORT, "http")
    labels = one(objs, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items(), "Service selects no faultd pod"
    assert svc["metadata"]["annotations"]["prometheus.io/port"] == str(HTTP_PORT)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_namespace(rendered, overlay):
    ns = NAMESPACES[overlay]
    for o in rendered[overlay]:
        if o["kind"] == "Namespace":
            assert o["metadata"]["name"] == ns
        else:
            assert o["metadata"]["namespace"] == ns, o["metadata"]
    has_ns = any(o["kind"] == "Namespace" for o in rendered[overlay])
    # The chaos-mesh namespace belongs to Chaos Mesh's installation, not to faultd.
    assert has_ns == (overlay == "default")


def test_default_namespace_allows_privileged_pods(rendered):
    labels = one(rendered["default"], "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"


@pytest.mark.parametrize("overlay", ["chaos-mesh", "cert-manager"])
def test_chaos_mesh_discovery_service(rendered, overlay):
    """The controller lists EndpointSlices named chaos-daemon-* (generated from a Service named
    chaos-daemon) or, in older releases, reads Endpoints `chaos-daemon`, in its own namespace."""
    svc = one(rendered[overlay], "Service")
    assert svc["metadata"]["name"] == "chaos-daemon"
    assert svc["metadata"]["namespace"] == "chaos-mesh"
    assert svc["spec"]["selector"], "EndpointSlices are only generated for a Service with a selector"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_host_access(rendered, overlay):
    objs = rendered[overlay]
    spec = pod_spec(objs)
    assert spec["hostPID"] is True
    assert spec.get("hostNetwork", False) is False
    c = container(objs)
    m = mounts_by_path(c)
    for path in ("/host-run", "/host-sys", "/lib/modules", "/var/lib/faultd", CERT_DIR):
        assert path in m, f"{overlay}: no mount at {path}"
    host_run = volume(spec, m["/host-run"]["name"])["hostPath"]["path"]
    assert host_run == {"default": "/run", "chaos-mesh": "/run/containerd",
                        "cert-manager": "/run/containerd"}[overlay]
    assert m["/host-run"]["readOnly"] is True
    assert volume(spec, m["/host-sys"]["name"])["hostPath"]["path"] == "/sys"
    assert not m["/host-sys"].get("readOnly", False), "stressors write cgroup.procs under /host-sys"
    assert volume(spec, m["/lib/modules"]["name"])["hostPath"]["path"] == "/lib/modules"
    assert m["/lib/modules"]["readOnly"] is True
    state = volume(spec, m["/var/lib/faultd"]["name"])
    assert state["hostPath"] == {"path": "/var/lib/faultd", "type": "DirectoryOrCreate"}, (
        "the journal must be on the host to survive pod restarts and reboots")
    assert env_of(c)["FAULTD_STATE_DIR"] == "/var/lib/faultd"
    assert "--state-dir" not in c["args"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_certificates(rendered, overlay):
    objs = rendered[overlay]
    spec = pod_spec(objs)
    c = container(objs)
    cert_mount = mounts_by_path(c)[CERT_DIR]
    assert cert_mount["readOnly"] is True
    secret = volume(spec, cert_mount["name"])["secret"]
    assert secret["secretName"] == SECRET_NAMES[overlay]
    args = c["args"]
    assert flag_value(args, "--ca") == f"{CERT_DIR}/ca.crt"
    assert flag_value(args, "--cert") == f"{CERT_DIR}/tls.crt"
    assert flag_value(args, "--key") == f"{CERT_DIR}/tls.key"
    assert "--insecure" not in args and "FAULTD_INSECURE" not in env_of(c)


@pytest.mark.parametrize("overlay", ["chaos-mesh", "cert-manager"])
def test_chaos_mesh_args_exactly(rendered, overlay):
    c = container(rendered[overlay])
    assert c["args"] == CHAOS_MESH_ARGS
    assert "command" not in c, "the image's ENTRYPOINT is faultd"
    assert env_of(c)["FAULTD_ALLOWED_CLIENT_NAMES"] == "controller-manager.chaos-mesh.org"


def test_default_overlay_discovers_the_runtime(rendered):
    """The default overlay pins no runtime: the host's /run is at /host-run and the image links
    /run/{containerd,k3s,crio,docker.sock} into it (deploy/image/assemble-rootfs.sh)."""
    args = container(rendered["default"])["args"]
    assert "--runtime" not in args and "--runtime-socket-path" not in args
    script = (DEPLOY / "image" / "assemble-rootfs.sh").read_text()
    for link in ("containerd", "k3s", "crio", "docker.sock"):
        assert f'ln -sfn /host-run/{link} "$dest/run/{link}"' in script


def test_flags_and_env_are_faultds(rendered, tmp_path):
    """Every flag and FAULTD_* variable the manifests, the Helm values and the chart pass is one
    faultd accepts (src/config.rs), so a renamed flag fails here rather than on a node."""
    flags = faultd_flags()
    envs = set(flags.values())
    seen_flags, seen_env = set(), set()
    containers = [container(objs) for objs in rendered.values()]
    containers.append(container(render_postrender(tmp_path)))
    for c in containers:
        for a in c.get("command", [])[1:] + c.get("args", []):
            if a.startswith("--"):
                seen_flags.add(a)
        seen_env |= {k for k in env_of(c) if k.startswith("FAULTD_")}
    values = yaml.safe_load((HELM / "values-faultd.yaml").read_text())
    seen_env |= {k for k in values["chaosDaemon"]["env"] if k.startswith("FAULTD_")}
    assert seen_flags - set(flags) == set(), f"unknown to faultd: {seen_flags - set(flags)}"
    assert seen_env - envs == set(), f"unknown to faultd: {seen_env - envs}"
    # The chart's own command line (see the fixture) is all upstream flags faultd keeps.
    assert {"--runtime", "--http-port", "--grpc-port", "--pprof", "--ca", "--cert", "--key",
            "--runtime-socket-path"} <= seen_flags


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes(rendered, overlay):
    c = container(rendered[overlay])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path
        assert ports.get(get["port"], get["port"]) == HTTP_PORT


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_least_privilege(rendered, overlay):
    objs = rendered[overlay]
    text = yaml.safe_dump_all(objs)
    assert "privileged: true" not in text
    c = container(objs)
    sc = c["securityContext"]
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == CAPABILITIES
    spec = pod_spec(objs)
    assert spec["automountServiceAccountToken"] is False
    assert one(objs, "ServiceAccount")["metadata"]["name"] == spec["serviceAccountName"]
    assert not any(o["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
                   for o in objs), "faultd never calls the Kubernetes API"
    annotations = one(objs, "DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations[f"container.apparmor.security.beta.kubernetes.io/{c['name']}"] == "unconfined"


def test_every_capability_is_explained():
    """Each granted capability is preceded by a comment in base/daemonset.yaml and has a row in
    deploy/README.md."""
    lines = (DEPLOY / "base" / "daemonset.yaml").read_text().splitlines()
    readme = (DEPLOY / "README.md").read_text()
    for cap in CAPABILITIES:
        idx = [i for i, l in enumerate(lines) if l.strip() == f"- {cap}"]
        assert len(idx) == 1, cap
        assert lines[idx[0] - 1].strip().startswith("#"), f"{cap} has no comment"
        assert f"`{cap}`" in readme, f"{cap} not in deploy/README.md"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scheduling_and_lifecycle(rendered, overlay):
    objs = rendered[overlay]
    spec = pod_spec(objs)
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["priorityClassName"] == "system-node-critical"
    c = container(objs)
    grace = parse_duration_s(env_of(c)["FAULTD_SHUTDOWN_GRACE"])
    # drain (--shutdown-grace), then halt every fault before the kubelet's SIGKILL.
    assert spec["terminationGracePeriodSeconds"] >= grace + 20
    res = c["resources"]
    assert res["requests"] == {"cpu": "10m", "memory": "20Mi"}
    assert res["limits"] == {"memory": "128Mi"}, "memory limit only: no CPU throttling"
    ds = one(objs, "DaemonSet")
    assert ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_image_tag_is_the_crate_version(rendered, overlay):
    assert container(rendered[overlay])["image"] == f"faultd:{cargo_version()}"


# --- Chaos Mesh Helm chart -------------------------------------------------------------------

def test_helm_values():
    values = yaml.safe_load((HELM / "values-faultd.yaml").read_text())
    cd = values["chaosDaemon"]
    assert set(cd["image"]) == {"registry", "repository", "tag"}
    assert cd["image"]["tag"] == cargo_version()
    # The chart mounts the runtime socket's host directory at /host-run and nothing persistent:
    # the journal goes there unless the post-renderer gives it /var/lib/faultd.
    assert cd["env"]["FAULTD_STATE_DIR"].startswith("/host-run/")
    assert cd["tproxyBridgeless"] is False


def test_helm_postrender_adds_journal_and_probes(tmp_path):
    objs = render_postrender(tmp_path)
    chart = kustomize_lite.load_yaml_docs(CHART_FIXTURE)
    assert {kustomize_lite.object_key(o) for o in objs} == {kustomize_lite.object_key(o) for o in chart}
    assert one(objs, "Service") == one(chart, "Service"), "only the DaemonSet is patched"
    spec = pod_spec(objs, "chaos-daemon")
    c = container(objs, "chaos-daemon", "chaos-daemon")
    before = container(chart, "chaos-daemon", "chaos-daemon")
    assert c["command"] == before["command"], "the chart's command line is kept"
    assert c["image"] == before["image"]
    m = mounts_by_path(c)
    assert set(mounts_by_path(before)) | {"/var/lib/faultd"} == set(m)
    assert volume(spec, m["/var/lib/faultd"]["name"])["hostPath"] == {
        "path": "/var/lib/faultd", "type": "DirectoryOrCreate"}
    assert env_of(c)["FAULTD_STATE_DIR"] == "/var/lib/faultd"
    assert env_of(c)["TZ"] == "UTC"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert spec["terminationGracePeriodSeconds"] >= 30
    assert spec["hostPID"] is True


def test_helm_postrender_script(tmp_path):
    """post-render.sh end to end (stdin -> stdout), as Helm runs it."""
    if not (shutil.which("kustomize") or shutil.which("kubectl")):
        pytest.skip("neither kustomize nor kubectl installed")
    out = subprocess.run(
        ["sh", str(HELM / "post-render" / "post-render.sh")],
        input=CHART_FIXTURE.read_text(), capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    theirs = [d for d in yaml.safe_load_all(out.stdout) if d]
    ours = render_postrender(tmp_path)
    assert {kustomize_lite.object_key(o): o for o in theirs} == {
        kustomize_lite.object_key(o): o for o in ours}


# --- kustomize_lite itself -------------------------------------------------------------------

def test_strategic_merge_rules():
    orig = {"spec": {"containers": [{"name": "a", "args": ["x"], "env": [{"name": "E", "value": "1"}]}],
                     "volumes": [{"name": "v1", "hostPath": {"path": "/a", "type": "Directory"}},
                                 {"name": "v2", "emptyDir": {}}],
                     "tolerations": [{"key": "k"}]}}
    patch = {"spec": {"containers": [{"name": "a", "args": ["y"], "env": [{"name": "F", "value": "2"}]}],
                      "volumes": [{"name": "v2", "emptyDir": {"medium": "Memory"}},
                                  {"name": "v3", "secret": {"secretName": "s"}}],
                      "tolerations": [{"operator": "Exists"}]}}
    out = kustomize_lite.strategic_merge(orig, patch)
    c = out["spec"]["containers"][0]
    assert c["args"] == ["y"]
    assert c["env"] == [{"name": "F", "value": "2"}, {"name": "E", "value": "1"}]
    assert [v["name"] for v in out["spec"]["volumes"]] == ["v2", "v3", "v1"]
    assert out["spec"]["volumes"][0] == {"name": "v2", "emptyDir": {"medium": "Memory"}}
    assert out["spec"]["tolerations"] == [{"operator": "Exists"}]
    assert kustomize_lite.strategic_merge({"a": 1, "b": 2}, {"a": None}) == {"b": 2}
    assert orig["spec"]["containers"][0]["args"] == ["x"], "inputs are not modified"


def test_unsupported_kustomize_fields_are_refused():
    with tempfile.TemporaryDirectory() as d:
        Path(d, "kustomization.yaml").write_text("resources: []\nnamePrefix: x-\n")
        with pytest.raises(kustomize_lite.KustomizeError, match="namePrefix"):
            kustomize_lite.build(d)
