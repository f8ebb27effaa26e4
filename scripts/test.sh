#!/usr/bin/env bash
# The whole test suite: sets .venv up first when needed (scripts/setup.sh is idempotent), then lint, then pytest.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k projection`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] ruff check"
.venv/bin/ruff check .
echo "[test] pytest"
exec .venv/bin/python -m pytest "$@"
