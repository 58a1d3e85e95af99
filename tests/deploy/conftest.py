"""Shared paths and fixtures for the deployment tests (run by tests/deploy.sh)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import kustomize_lite  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ["default", "chaos-mesh", "cert-manager"]
REPORT_DIR = REPO / "tests" / "env" / "cache" / "deploy"

# Filled by test_image.py; printed in pytest's terminal summary (before the closing line).
IMAGE_REPORT: list[str] = []


def kubectl_kustomize(directory: Path) -> list[dict] | None:
    """`kubectl kustomize DIR` parsed, or None when kubectl is not installed."""
    import yaml

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    out = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    if out.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    return {name: kustomize_lite.build(DEPLOY / "overlays" / name) for name in OVERLAYS}


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if IMAGE_REPORT:
        terminalreporter.section("faultd image filesystem")
        for line in IMAGE_REPORT:
            terminalreporter.write_line(line)
