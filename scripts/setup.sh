#!/usr/bin/env bash
# Create .venv and install towervision-hf with its test extras, at the exact versions of requirements/lock.txt (the
# set CI tested). Idempotent; safe to re-run. lmms-eval is separate: bash scripts/setup_lmms.sh.
#   bash scripts/setup.sh                 install from the lock
#   bash scripts/setup.sh --refresh-lock  resolve the newest versions pyproject.toml allows (lmms-eval included) and
#                                         rewrite the lock
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
# torch/torchvision pinned first, so the resolver never swaps in another (multi-GB) torch build for a later package.
.venv/bin/python -m pip install -q "${constraints[@]}" "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q "${constraints[@]}" -e ".[dev]"
if [ ${#constraints[@]} -eq 0 ]; then
  TOWERVISION_NO_LOCK=1 bash scripts/setup_lmms.sh
  {
    echo "# Exact versions the test suite passed with: scripts/setup.sh (and setup_lmms.sh) install them as pip constraints."
    echo "# Refresh: bash scripts/setup.sh --refresh-lock && .venv/bin/python -m pytest, then commit this file."
    .venv/bin/python -m pip freeze --exclude-editable --disable-pip-version-check
  } > "$LOCK"
  echo "wrote $LOCK: $(grep -c '==' "$LOCK") pinned packages"
fi
