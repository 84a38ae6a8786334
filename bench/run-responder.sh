#!/usr/bin/env bash
# The responder benchmark (bench/responder_bench.py) as root, inside its own mount namespace with a private
# journald (docs/testing.md), so the journald backend is measured without touching the host's journal.
#   bash bench/run-responder.sh                              every part
#   bash bench/run-responder.sh --parts latency --scans 40   some parts
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "run-responder: the lab needs root" >&2
    exit 2
fi
if ! command -v trafgen >/dev/null || [ ! -x .venv/bin/python ]; then
    bash scripts/setup.sh --test
fi
exec unshare --mount --propagation private --fork -- \
    bash scripts/with-journald.sh .venv/bin/python -m bench.responder_bench "$@"
