#!/usr/bin/env bash
# One command that installs everything and runs the main job in the foreground: detector and responder on the
# embedded default configuration. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/portsentinel run "$@"
