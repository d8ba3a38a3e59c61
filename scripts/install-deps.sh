#!/usr/bin/env bash
# Installs what moec needs on Debian/Ubuntu: the build toolchain and runtime C libraries
# (Debian packages), and a Python venv for the tests (Debian's torch + PyPI tokenizers,
# safetensors). Idempotent: skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

PKGS="build-essential cmake pkg-config libopenblas-dev libopenblas0-pthread libcjson-dev
      libpcre2-dev libutf8proc-dev python3 python3-venv python3-torch python3-numpy"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "moec: installing Debian packages:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

# The test venv sees Debian's torch/numpy (system site packages) and adds PyPI packages.
if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
if ! .venv/bin/python -c "import tokenizers, safetensors" 2>/dev/null; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "tokenizers>=0.15" "safetensors>=0.4"
fi
# gguf: llama.cpp's reader/writer (tests/py_test_gguf.py); needs numpy >= 1.17, so Debian's stays
if ! .venv/bin/python -c "import gguf" 2>/dev/null; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "gguf>=0.17,<1"
fi
echo "moec: dependencies ready"
