#!/usr/bin/env bash
# Add a working `lmms-eval` (with the `towervision` model plugin) to .venv, made by scripts/setup.sh. Idempotent.
#
# lmms-eval 0.7.3 pins av<16 and pulls ~65 packages (wandb, yt-dlp, ...) that its core does not import; installing
# it with its requirements would downgrade the PyAV that our processors decode video with. So lmms-eval goes in
# without its requirements, and the `lmms` extra adds what `lmms-eval --model towervision --tasks ...` imports to
# run (evaluate, tenacity, pytablewriter, filelock<4, loguru, pytz, sacrebleu). Tasks with their own extra needs
# (e.g. pycocoevalcap for captioning metrics) name the missing module when run: pip install it then.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
constraints=(-c requirements/lock.txt)  # the versions CI tested; scripts/setup.sh --refresh-lock resolves afresh
[ -z "${TOWERVISION_NO_LOCK:-}" ] || constraints=()
.venv/bin/python -m pip install -q "${constraints[@]}" -e ".[lmms]"
.venv/bin/python -m pip install -q "${constraints[@]}" --no-deps "lmms-eval==0.7.3" 2>&1 | grep -v "lmms-eval 0.7.3 requires" || true
.venv/bin/python -c "import av, lmms_eval.evaluator; print('lmms-eval ready (PyAV', av.__version__ + ')')"
