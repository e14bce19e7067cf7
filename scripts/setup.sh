#!/usr/bin/env bash
# Create .venv and install towervision-hf with its test extras. Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# torch/torchvision pinned first: these exact releases are on local disk here; a looser spec may pull a multi-GB build.
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[dev]"
# lmms-eval (optional, its pins conflict with PyAV): bash scripts/setup_lmms.sh
