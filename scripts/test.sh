#!/usr/bin/env bash
# One command that installs everything and runs the whole test suite (unit, lint, types, lab, journald).
# Runs as root on Debian 12. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec unshare --mount --propagation private --fork -- bash scripts/with-journald.sh .venv/bin/python -m pytest "$@"
