#!/usr/bin/env bash
# Installs qcompile and everything it needs on a fresh Debian/Ubuntu machine with Python 3.11:
# the Python package (from PyPI) and, for ARM targets and their tests, the aarch64 cross compiler and qemu.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

debian_packages=(g++-aarch64-linux-gnu binutils-aarch64-linux-gnu qemu-user-static)
missing=()
for pkg in "${debian_packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "setup.sh: no apt-get; install ${missing[*]} yourself for ARM targets" >&2
    fi
fi

"$PYTHON" -m pip install --quiet --upgrade pip
"$PYTHON" -m pip install --quiet -e ".[test]"
