#!/usr/bin/env bash
# Set up (both venvs), then run the whole test suite plus ruff and mypy --strict.
# Extra args go to pytest (e.g. -k matcher).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --train
. .venv/bin/activate
# The training smoke test (tests/test_training.py) must run here, not skip.
export SYNESTHETE_REQUIRE_TRAIN=1
ruff check .
ruff format --check .
bash scripts/typecheck.sh
pytest "$@"
