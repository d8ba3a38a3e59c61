#!/usr/bin/env bash
# Builds llama.cpp (the inference peer) from the llama-cpp-python sdist on PyPI, sets up the
# converter's Python environment, makes the bench checkpoints and converts them to GGUF
# BF16, Q8_0 and Q4_0.  Everything goes under bench/work/ (git-ignored).  Idempotent: each step is
# skipped when its output already exists.
#
#   bench/build_llamacpp.sh [STEP] [M|F|all]
#
# STEP is one of: fetch, build, pyenv, models, convert, all (default all).  The model
# argument (default M) picks which checkpoints `models`/`convert`/`all` handle.
#
# Layout (paths relative to the repository root):
#   bench/work/dl/                      the sdist and its unpacked tree
#   bench/work/llama.cpp/               llama.cpp source (vendor/llama.cpp of the sdist)
#   bench/work/llama.cpp/build/bin/     llama-bench, llama-quantize, llama-perplexity, llama-tokenize
#   bench/work/llama.cpp/SOURCE_INFO    llama-cpp-python version and llama.cpp commit
#   bench/work/venv/                    converter venv (system site packages: Debian torch)
#   bench/work/models/bench-M/          HF checkpoint (config.json, safetensors, tokenizer)
#   bench/work/gguf/bench-M-BF16.gguf   converted
#   bench/work/gguf/bench-M-Q8_0.gguf   quantized from the BF16 GGUF
#
# Network: PyPI only (pip); Debian apt for cmake/compilers if missing.
set -euo pipefail

# Pinned peer.  llama-cpp-python 0.3.36 vendors ggml-org/llama.cpp@0c1e57098 (its CHANGELOG).
LCP_VERSION="${LCP_VERSION:-0.3.36}"
# Converter deps that work with Debian's python3-torch 1.13 / python3-numpy 1.24 (the converter
# needs torch; PyPI's torch wheels pull ~3 GB of CUDA libraries, so we reuse Debian's).
TRANSFORMERS_VERSION="${TRANSFORMERS_VERSION:-4.57.6}"
TOKENIZERS_SPEC="${TOKENIZERS_SPEC:-tokenizers>=0.22,<=0.23.0}"
JOBS="${JOBS:-2}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$ROOT/bench/work"
DL="$WORK/dl"
LCPP="$WORK/llama.cpp"
BUILD="$LCPP/build"
VENV="$WORK/venv"
MODELS="$WORK/models"
GGUF="$WORK/gguf"
SYS_PY="${SYS_PY:-/usr/bin/python3}"

STEP="${1:-all}"
WHICH="${2:-M}"

log() { printf '\n=== %s\n' "$*" >&2; }

step_fetch() {
    if [[ -f "$LCPP/CMakeLists.txt" && -f "$LCPP/SOURCE_INFO" ]]; then
        log "fetch: $LCPP already there ($(grep commit "$LCPP/SOURCE_INFO"))"
        return
    fi
    mkdir -p "$DL"
    local sdist="$DL/llama_cpp_python-$LCP_VERSION.tar.gz"
    if [[ ! -f "$sdist" ]]; then
        log "fetch: pip download llama-cpp-python==$LCP_VERSION (sdist)"
        # (pip prepares the sdist's metadata, which installs its build backend in a temporary
        # environment: about a minute)
        python3 -m pip download --no-binary :all: --no-deps -d "$DL" "llama-cpp-python==$LCP_VERSION"
    fi
    log "fetch: unpacking $sdist"
    rm -rf "$DL/src" "$LCPP"
    mkdir -p "$DL/src"
    tar xzf "$sdist" -C "$DL/src"
    local top="$DL/src/llama_cpp_python-$LCP_VERSION"
    mv "$top/vendor/llama.cpp" "$LCPP"
    local commit
    commit="$(grep -m1 -o 'ggml-org/llama.cpp@[0-9a-f]*' "$top/CHANGELOG.md" | cut -d@ -f2 || true)"
    {
        echo "llama-cpp-python $LCP_VERSION"
        echo "commit ${commit:-unknown}"
        echo "sha256 $(sha256sum "$sdist" | cut -d' ' -f1)"
    } > "$LCPP/SOURCE_INFO"
    rm -rf "$DL/src"
    cat "$LCPP/SOURCE_INFO" >&2
}

step_build() {
    command -v cmake >/dev/null || { log "installing cmake (apt)"; apt-get install -y cmake build-essential; }
    local commit
    commit="$(awk '$1=="commit"{print $2}' "$LCPP/SOURCE_INFO")"
    if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
        log "build: configuring (Release, CPU only, GGML_NATIVE=ON)"
        cmake -S "$LCPP" -B "$BUILD" \
            -DCMAKE_BUILD_TYPE=Release \
            -DGGML_NATIVE=ON \
            -DGGML_BLAS=OFF -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_RPC=OFF \
            -DBUILD_SHARED_LIBS=OFF \
            -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
            -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
            -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
            -DLLAMA_BUILD_COMMIT="$commit" -DLLAMA_BUILD_NUMBER=0 >&2
    fi
    # llama-perplexity and llama-tokenize are for bench/quant_accuracy.sh (accuracy per format).
    local targets=(llama-bench llama-quantize llama-perplexity llama-tokenize) missing=0 t
    for t in "${targets[@]}"; do [[ -x "$BUILD/bin/$t" ]] || missing=1; done
    if (( missing == 0 )); then
        log "build: binaries present; running the (incremental) build anyway"
    else
        log "build: ${targets[*]} with -j$JOBS (slow on 2 cores)"
    fi
    cmake --build "$BUILD" --config Release -j"$JOBS" --target "${targets[@]}" >&2
    for t in "${targets[@]}"; do ls -la "$BUILD/bin/$t" >&2; done
}

step_pyenv() {
    if [[ -f "$VENV/.ok" ]]; then
        log "pyenv: $VENV ready"
        return
    fi
    log "pyenv: venv with system site packages (Debian python3-torch, python3-numpy)"
    if ! "$SYS_PY" -c 'import torch, numpy' 2>/dev/null; then
        apt-get install -y python3-torch python3-numpy python3-yaml python3-venv
    fi
    rm -rf "$VENV"
    "$SYS_PY" -m venv --system-site-packages "$VENV"
    # No deps resolution for gguf-py / transformers: their metadata asks for numpy>=2, which
    # would replace Debian's numpy 1.24 that python3-torch 1.13 is built against.
    "$VENV/bin/pip" install -q --no-deps -e "$LCPP/gguf-py"
    "$VENV/bin/pip" install -q --no-deps "transformers==$TRANSFORMERS_VERSION"
    "$VENV/bin/pip" install -q "$TOKENIZERS_SPEC" "huggingface-hub>=0.34,<1.0" "safetensors>=0.4.3" \
        "regex!=2019.12.17" "packaging>=20" filelock "pyyaml>=5.1" requests "tqdm>=4.27" \
        "sentencepiece>=0.1.98,<0.3.0" "protobuf>=4.21,<5" "numpy<2"
    "$VENV/bin/python" - <<'EOF'
import numpy, torch, transformers, tokenizers, safetensors, gguf
print("numpy", numpy.__version__, "torch", torch.__version__, "transformers", transformers.__version__,
      "tokenizers", tokenizers.__version__, "safetensors", safetensors.__version__)
EOF
    touch "$VENV/.ok"
}

arch_of() { case "$1" in M) echo mixtral ;; F) echo olmoe ;; *) echo "unknown model $1" >&2; exit 2 ;; esac; }

models_list() {
    case "$WHICH" in all) echo "M F" ;; M|F) echo "$WHICH" ;; *) echo "usage: $0 [STEP] [M|F|all]" >&2; exit 2 ;; esac
}

step_models() {
    for m in $(models_list); do
        local dir="$MODELS/bench-$m"
        if [[ -f "$dir/.ok" ]]; then
            log "models: $dir ready"
            continue
        fi
        log "models: writing bench-$m ($(arch_of "$m")) to $dir"
        "$VENV/bin/python" "$ROOT/bench/make_bench_model.py" --arch "$(arch_of "$m")" --out "$dir"
        touch "$dir/.ok"
    done
}

# Runs convert_hf_to_gguf.py unmodified, with two adjustments made from outside:
# - Debian's torch 1.13 lacks the float8/uint16-64 dtypes that the converter names in its
#   dtype tables: they get placeholder objects (our checkpoints are bf16, never those types).
# - the converter refuses a BPE tokenizer whose pre-tokenizer hash it does not know (the hash
#   of a fixed string's token ids, so any freshly trained vocab is "unknown").  Our tokenizer
#   uses the plain GPT-2 byte-level pre-tokenizer, so it is told "gpt-2".
CONVERT_WRAPPER='
import sys, runpy, logging
import torch
class _MissingDtype:
    def __init__(self, name): self.name = name
    def __repr__(self): return "torch." + self.name + " (missing in torch " + torch.__version__ + ")"
for _n in ("float8_e4m3fn", "float8_e5m2", "float8_e8m0fnu", "uint16", "uint32", "uint64"):
    if not hasattr(torch, _n):
        setattr(torch, _n, _MissingDtype(_n))
sys.path.insert(0, sys.argv[1]); sys.path.insert(1, sys.argv[1] + "/gguf-py")
import conversion.base as base
orig = base.TextModel.get_vocab_base_pre
def pre(self, tokenizer):
    try:
        return orig(self, tokenizer)
    except NotImplementedError:
        logging.getLogger("bench").warning("unknown BPE pre-tokenizer hash: using gpt-2 (bench tokenizer)")
        return "gpt-2"
base.TextModel.get_vocab_base_pre = pre
script = sys.argv[1] + "/convert_hf_to_gguf.py"
sys.argv = [script] + sys.argv[2:]
runpy.run_path(script, run_name="__main__")
'

step_convert() {
    mkdir -p "$GGUF"
    for m in $(models_list); do
        local dir="$MODELS/bench-$m" bf16="$GGUF/bench-$m-BF16.gguf" q8="$GGUF/bench-$m-Q8_0.gguf"
        if [[ ! -f "$bf16" ]]; then
            log "convert: $dir -> $bf16"
            "$VENV/bin/python" -c "$CONVERT_WRAPPER" "$LCPP" "$dir" --outtype bf16 --outfile "$bf16.tmp"
            mv "$bf16.tmp" "$bf16"
        else
            log "convert: $bf16 present"
        fi
        for q in Q8_0 Q4_0; do
            local out="$GGUF/bench-$m-$q.gguf"
            if [[ ! -f "$out" ]]; then
                log "quantize: $bf16 -> $out"
                "$BUILD/bin/llama-quantize" "$bf16" "$out.tmp" $q "$JOBS"
                mv "$out.tmp" "$out"
            else
                log "quantize: $out present"
            fi
        done
        ls -la "$bf16" "$GGUF/bench-$m-Q8_0.gguf" "$GGUF/bench-$m-Q4_0.gguf" >&2
    done
}

case "$STEP" in
    fetch) step_fetch ;;
    build) step_fetch; step_build ;;
    pyenv) step_fetch; step_pyenv ;;
    models) step_fetch; step_pyenv; step_models ;;
    convert) step_fetch; step_build; step_pyenv; step_models; step_convert ;;
    all) step_fetch; step_build; step_pyenv; step_models; step_convert ;;
    M|F) WHICH="$STEP"; step_fetch; step_build; step_pyenv; step_models; step_convert ;;
    *) echo "usage: $0 [fetch|build|pyenv|models|convert|all] [M|F|all]" >&2; exit 2 ;;
esac
