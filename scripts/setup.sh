#!/usr/bin/env bash
# Create .venv and install towervision-hf with its test extras, at the exact versions of requirements/lock.txt (the
# set CI tested). Idempotent; safe to re-run.
#   bash scripts/setup.sh                 install from the lock
#   bash scripts/setup.sh --refresh-lock  resolve the newest versions pyproject.toml allows and rewrite the lock
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
LOCK=requirements/lock.txt
constraints=(-c "$LOCK")
if [ "${1:-}" = "--refresh-lock" ]; then
  constraints=()
  rm -rf .venv
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# torch/torchvision pinned first: these exact releases are on local disk here; a looser spec may pull a multi-GB build.
.venv/bin/python -m pip install -q "${constraints[@]}" "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q "${constraints[@]}" -e ".[dev]"
# lmms-eval's own pins would downgrade PyAV; the plugin only needs its model interface, so install it without deps.
.venv/bin/python -m pip install -q "${constraints[@]}" --no-deps "lmms-eval==0.7.3" "loguru>=0.7" "pytz"
if [ ${#constraints[@]} -eq 0 ]; then
  {
    echo "# Exact versions the test suite passed with: scripts/setup.sh installs them as pip constraints."
    echo "# Refresh: bash scripts/setup.sh --refresh-lock && .venv/bin/python -m pytest, then commit this file."
    .venv/bin/python -m pip freeze --exclude-editable --disable-pip-version-check
  } > "$LOCK"
  echo "wrote $LOCK: $(grep -c '==' "$LOCK") pinned packages"
fi
