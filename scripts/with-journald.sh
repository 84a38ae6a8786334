#!/usr/bin/env bash
# Run a command against a private journald (docs/testing.md). Call inside `unshare --mount --propagation private`.
set -euo pipefail
mkdir -p /run/systemd/journal /run/log/journal
mount -t tmpfs -o mode=0755 tmpfs /run/systemd/journal
mount -t tmpfs -o mode=2755 tmpfs /run/log/journal
/lib/systemd/systemd-journald &
jpid=$!
for _ in $(seq 100); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
[ -S /run/systemd/journal/socket ] || { echo "private journald did not start" >&2; kill "$jpid"; exit 1; }
export PORTSENTINEL_PRIVATE_JOURNALD=1
rc=0
"$@" || rc=$?
kill "$jpid" 2>/dev/null || true
wait "$jpid" 2>/dev/null || true
exit "$rc"
