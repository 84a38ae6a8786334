#!/usr/bin/env bash
# Build portsentinel_<version>_all.deb (and the source package) into dist/, from this checkout.
#   scripts/build-deb.sh            (or: make deb)
# As root it installs the build dependencies first (apt-get); otherwise they must be installed. The build
# runs in a temporary copy of the tree (the files git knows, or everything but caches outside a git
# checkout) with packaging/debian copied to debian/, under a clean environment: a pyenv or venv python on
# PATH would shadow /usr/bin/python3 and break pybuild.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=${DIST_DIR:-$root/dist}

build_deps=(make dpkg-dev fakeroot debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools
            python3-argparse-manpage lintian)
missing=()
for p in "${build_deps[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "build-deb: missing build dependencies: ${missing[*]} (run as root to install them)" >&2
        exit 1
    fi
    echo "build-deb: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

version=$(sed -n 's/^__version__ *= *"\(.*\)"/\1/p' portsentinel/__init__.py | head -n 1)
changelog=$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)
if [ "$version" != "$changelog" ]; then
    echo "build-deb: portsentinel/__init__.py says $version but packaging/debian/changelog says $changelog;" \
         "add a changelog entry (dch -v $version)" >&2
    exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
src=$tmp/portsentinel-$version
mkdir -p "$src"
if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$root" ls-files -z --cached --others --exclude-standard \
        | (cd "$root" && xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh) \
        | tar -C "$root" --null -T - -cf - | tar -C "$src" -xf -
else
    tar -C "$root" --exclude=.git --exclude=.venv --exclude=dist --exclude=build --exclude='*.egg-info' \
        --exclude=__pycache__ --exclude='.*_cache' --exclude=.hypothesis --exclude=tests/.cache -cf - . \
        | tar -C "$src" -xf -
fi
rm -rf "$src/debian"
cp -a packaging/debian "$src/debian"

(cd "$src" && env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$tmp" LC_ALL=C.UTF-8 \
    dpkg-buildpackage -us -uc --build=full)

mkdir -p "$out"
for f in "$tmp"/portsentinel_"$version"*; do
    cp "$f" "$out/"
done
echo "build-deb: $(ls "$out"/portsentinel_"$version"_all.deb)"
