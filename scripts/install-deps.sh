#!/usr/bin/env bash
# Installs what moec needs on Debian/Ubuntu: the build toolchain and runtime C libraries
# (Debian packages), and two Python venvs for the tests:
#   .venv     Debian's torch 1.13 + numpy (system site packages) + PyPI tokenizers, safetensors:
#             the PyTorch reference tests (tests/py_test_*.py)
#   .venv-hf  PyPI torch + transformers 5 + tokenizers, safetensors, numpy, isolated from the
#             system packages: transformers itself as the oracle (tests/hf_test_*.py).
#             transformers 5 needs torch >= 2.4, which Debian does not ship; PyPI's torch
#             wheel pulls its NVIDIA runtime wheels even on CPU: ~3 GB to download, ~5.6 GB
#             on disk. MOEC_SKIP_HF=1 skips it (then the hf_test_* tests fail, naming this).
# Idempotent: skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

PKGS="build-essential cmake pkg-config libcjson-dev
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

# transformers 5 with a torch it accepts, in its own venv (so .venv keeps Debian's torch)
HF_PKGS="torch>=2.4 transformers>=5,<6 tokenizers>=0.22 safetensors>=0.4 numpy"
if [ "${MOEC_SKIP_HF:-0}" != 1 ]; then
  if [ ! -x .venv-hf/bin/python ]; then
    /usr/bin/python3 -m venv .venv-hf
  fi
  if ! .venv-hf/bin/python -c "import torch, transformers, tokenizers, safetensors, numpy
assert int(transformers.__version__.split('.')[0]) == 5" 2>/dev/null; then
    echo "moec: installing $HF_PKGS into .venv-hf (PyPI torch: ~3 GB download, ~5.6 GB on disk)"
    .venv-hf/bin/python -m pip install -q --disable-pip-version-check $HF_PKGS
  fi
fi
echo "moec: dependencies ready"
