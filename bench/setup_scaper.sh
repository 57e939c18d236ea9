#!/usr/bin/env bash
# Set up the Scaper comparison for bench/bench_mixing.py in its own virtual environment (bench/.venv-scaper),
# so Scaper's pins (numpy<2, pandas<2.3, scipy<1.16) never touch the project's environment.
# Scaper renders through pysox, which shells out to the `sox` binary: install it system-wide (needs root or sudo).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv-scaper"
PYTHON="${PYTHON:-python3.11}"

if ! command -v sox >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq sox libsox-dev
fi
sox --version

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "scaper==1.6.5" "numpy<2" "pandas<2.3" "scipy<1.16" "soundfile"
"$VENV/bin/python" -c "import scaper, numpy; print('scaper', scaper.__version__, 'numpy', numpy.__version__)"
