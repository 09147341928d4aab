#!/usr/bin/env bash
# mypy --strict over the package as it is installed (synesthete.stream, ...).
# mypy cannot follow setuptools' editable package-dir finder, so mirror the
# namespace with symlinks in .typecheck/ and check that tree.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .typecheck
mkdir -p .typecheck/synesthete
for dir in stream inference index clients; do ln -s "../../$dir" ".typecheck/synesthete/$dir"; done
for file in synesthete/*.py synesthete/py.typed; do ln -s "../../$file" ".typecheck/synesthete/"; done
exec mypy "$@" .typecheck/synesthete
