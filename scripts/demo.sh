#!/usr/bin/env bash
# Set up, then run the built-in demo: synthesize and index a small library,
# replay a live set in real time with the terminal view and the websocket
# server (overlay at http://127.0.0.1:8765/overlay). Extra args go to `synesthete demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/synesthete demo "$@"
