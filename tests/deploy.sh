#!/usr/bin/env bash
# Deployment tests: the container image (Dockerfile, deploy/image/assemble-rootfs.sh) and the
# Kubernetes manifests (deploy/). Runs tests/deploy/ with pytest; the last line is pytest's summary.
#
#   bash tests/deploy.sh [pytest args...]
#
# Needs target/release/faultd (`cargo build --release`; the image tests fail, saying so, without
# it). Installs its Python tools from tests/deploy/requirements.txt into a venv under
# tests/env/cache/venv once (reinstalled only when that file changes). The image holds no nft
# (partitions use nf_tables netlink). As root, the assembled image filesystem is also run under
# chroot; otherwise those tests are skipped.
# Env: FAULTD_DEPLOY_VENV (venv path).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

VENV=${FAULTD_DEPLOY_VENV:-$ROOT/tests/env/cache/venv}
REQ=$ROOT/tests/deploy/requirements.txt
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  echo "deploy.sh: installing $(grep -cv '^#' "$REQ") Python packages into $VENV"
  python3 -m venv --clear "$VENV" ||
    { echo "deploy.sh: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2; exit 1; }
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ"
  echo "$want" > "$VENV/.requirements.sha256"
fi

export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in the work tree
exec "$VENV/bin/python" -m pytest tests/deploy -p no:cacheprovider -q -rs "$@"
