"""A small, exact renderer for the kustomize features deploy/ uses.

No kustomize binary is needed to test the manifests: this renders `resources` (files and
directories), `namespace`, and `patches` (strategic merge, from `path` or inline `patch`, matched by
the patch's kind/name or by a `target` with kind/name/namespace), including a top-level
`$patch: delete`. Anything else in a kustomization.yaml is an error, so a new feature in deploy/
fails the tests until it is supported here. When `kubectl` is on PATH the tests also compare the
output with `kubectl kustomize`.

Strategic merge follows Kubernetes' rules for the fields deploy/ patches: maps merge, `null`
deletes, lists of the pod spec merge by their patchMergeKey (containers/volumes/env by name,
volumeMounts by mountPath, container ports by containerPort, Service ports by port), other lists
are replaced. Merged lists hold the patch's items first, in patch order, then the original items
the patch did not mention, as kustomize writes them.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "namespace", "patches"}

# Kinds that have no namespace (kustomize's namespace transformer leaves them alone).
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "ClusterIssuer",
    "StorageClass",
    "PersistentVolume",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "APIService",
    "Node",
    "RuntimeClass",
}

# field name -> merge key, for lists of maps (Kubernetes patchMergeKey).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "imagePullSecrets": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "hostAliases": "ip",
}


class KustomizeError(Exception):
    pass


def load_yaml_docs(path: Path) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def _list_merge_key(field: str, items: list) -> str | None:
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    if field == "ports":
        if all("containerPort" in i for i in items):
            return "containerPort"
        if all("port" in i for i in items):
            return "port"
        return None
    return MERGE_KEYS.get(field)


def strategic_merge(orig: Any, patch: Any, field: str = "") -> Any:
    """Returns orig with patch merged in (neither argument is modified)."""
    if isinstance(patch, dict) and isinstance(orig, dict):
        if "$patch" in patch:
            raise KustomizeError(f"unsupported $patch directive inside {field!r}")
        out = copy.deepcopy(orig)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(patch, list) and isinstance(orig, list):
        key = _list_merge_key(field, patch)
        if orig and _list_merge_key(field, orig) != key:
            key = None
        if key is None:
            return copy.deepcopy(patch)
        merged, used = [], set()
        for p in patch:
            if key not in p:
                raise KustomizeError(f"list {field!r}: patch item without merge key {key!r}")
            match = next(
                (i for i, o in enumerate(orig) if o.get(key) == p[key] and i not in used), None
            )
            if match is None:
                merged.append(copy.deepcopy(p))
            else:
                used.add(match)
                merged.append(strategic_merge(orig[match], p, field))
        merged.extend(copy.deepcopy(o) for i, o in enumerate(orig) if i not in used)
        return merged
    return copy.deepcopy(patch)


def _matches(obj: dict, kind: str | None, name: str | None, namespace: str | None) -> bool:
    md = obj.get("metadata", {})
    return (
        (kind is None or obj.get("kind") == kind)
        and (name is None or md.get("name") == name)
        and (namespace is None or md.get("namespace") == namespace)
    )


def build(directory: os.PathLike | str) -> list[dict]:
    """Renders the kustomization in `directory` and returns its objects in resource order."""
    d = Path(directory)
    kfile = next((d / n for n in ("kustomization.yaml", "kustomization.yml", "Kustomization")
                  if (d / n).exists()), None)
    if kfile is None:
        raise KustomizeError(f"{d}: no kustomization.yaml")
    k = yaml.safe_load(kfile.read_text()) or {}
    unknown = set(k) - SUPPORTED_FIELDS
    if unknown:
        raise KustomizeError(f"{kfile}: fields not supported by kustomize_lite: {sorted(unknown)}")
    if k.get("kind", "Kustomization") != "Kustomization":
        raise KustomizeError(f"{kfile}: kind {k.get('kind')!r} is not Kustomization")

    objs: list[dict] = []
    for r in k.get("resources", []):
        p = (d / r).resolve()
        if p.is_dir():
            objs.extend(build(p))
        elif p.is_file():
            objs.extend(load_yaml_docs(p))
        else:
            raise KustomizeError(f"{kfile}: resource {r!r} not found")

    seen = set()
    for o in objs:
        ident = (o.get("apiVersion"), o.get("kind"), o["metadata"].get("namespace"),
                 o["metadata"]["name"])
        if ident in seen:
            raise KustomizeError(f"{kfile}: duplicate resource {ident}")
        seen.add(ident)

    for entry in k.get("patches", []):
        if "path" in entry:
            docs = load_yaml_docs(d / entry["path"])
        elif "patch" in entry:
            docs = [yaml.safe_load(entry["patch"])]
        else:
            raise KustomizeError(f"{kfile}: patch without path or patch")
        if set(entry) - {"path", "patch", "target"}:
            raise KustomizeError(f"{kfile}: unsupported patch options {sorted(set(entry))}")
        for doc in docs:
            target = entry.get("target")
            if target:
                if set(target) - {"kind", "name", "namespace", "group", "version"}:
                    raise KustomizeError(f"{kfile}: unsupported target selector {target}")
                sel = (target.get("kind"), target.get("name"), target.get("namespace"))
            else:
                md = doc.get("metadata", {})
                sel = (doc.get("kind"), md.get("name"), md.get("namespace"))
            hits = [i for i, o in enumerate(objs) if _matches(o, *sel)]
            if not hits:
                raise KustomizeError(f"{kfile}: patch target {sel} matches no resource")
            body = {key: v for key, v in doc.items() if key not in ("apiVersion", "kind")}
            if doc.get("$patch") == "delete":
                objs = [o for i, o in enumerate(objs) if i not in hits]
                continue
            body.pop("$patch", None)
            md_patch = dict(body.get("metadata", {}))
            # The patch's own identity does not rename or move its target.
            for key in ("name", "namespace"):
                md_patch.pop(key, None)
            if md_patch:
                body["metadata"] = md_patch
            else:
                body.pop("metadata", None)
            for i in hits:
                objs[i] = strategic_merge(objs[i], body)

    ns = k.get("namespace")
    if ns:
        for o in objs:
            if o.get("kind") == "Namespace":
                if o["metadata"]["name"] != ns:
                    raise KustomizeError(
                        f"{kfile}: Namespace {o['metadata']['name']!r} differs from namespace: {ns!r}"
                    )
                continue
            if o.get("kind") in CLUSTER_SCOPED:
                continue
            o.setdefault("metadata", {})["namespace"] = ns
    return objs


def object_key(o: dict) -> tuple:
    md = o.get("metadata", {})
    return (o.get("apiVersion"), o.get("kind"), md.get("namespace"), md.get("name"))
