#!/usr/bin/env bash
# Installs qcompile and everything it needs on a fresh Debian/Ubuntu machine with Python 3.11.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip install --quiet --upgrade pip
"$PYTHON" -m pip install --quiet -e ".[test]"
