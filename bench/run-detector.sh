#!/usr/bin/env bash
# The detector benchmark (bench/detector_pps.py) with the project's venv, as root. Arguments go to it.
#   bash bench/run-detector.sh                       every part
#   bash bench/run-detector.sh --parts flood,scapy   some parts
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "run-detector: the lab needs root" >&2
    exit 2
fi
if ! command -v trafgen >/dev/null || ! command -v hping3 >/dev/null || [ ! -x .venv/bin/python ]; then
    bash scripts/setup.sh --test
fi
exec .venv/bin/python -m bench.detector_pps "$@"
