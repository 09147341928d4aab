#!/usr/bin/env bash
# Set up, then run the whole test suite plus ruff and mypy --strict.
# Extra args go to pytest (e.g. -k matcher).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check .
ruff format --check .
bash scripts/typecheck.sh
pytest "$@"
