#!/usr/bin/env bash
# Training throughput, moec vs the PyTorch baseline (shared/bench/torch_moe_train.py), side by
# side in one run: the same model, batch, optimizer and thread count (`moec bench train --preset P`
# copies the baseline's PRESETS table), random tokens, forward + backward + AdamW, the median
# step after a warm-up step in both.
#   bench/train_vs_torch.sh [tiny|small|fine|all]        (default: small and fine, the issue's presets)
# The peer is measured at its best setting: two PyTorch builds, Debian's (1.13, OpenBLAS) and,
# when the checkout has it, PyPI's in .venv-hf (MKL + oneDNN, what `make venv-hf` installs), each
# with OpenMP's default waiting (libgomp: spin, then sleep) and with OMP_WAIT_POLICY=passive;
# the fastest of the four is the reference. The baseline is fp32 (under torch.autocast(bfloat16)
# it stops at index_add_'s dtype check, so PyTorch's bf16 is not a setting it has). moec runs
# twice: --matmul fp32 (the same arithmetic) and --matmul bf16 (mixed precision: bf16 products on
# AMX tiles where the CPU has them, fp32 master weights; tests/py_test_train_grad.py checks it).
# Environment: THREADS (2), STEPS (5), TORCH (the baseline script).
set -euo pipefail
cd "$(dirname "$0")/.."
WHICH=${1:-default}
STEPS=${STEPS:-5}
THREADS=${THREADS:-2}
TORCH=${TORCH:-../shared/bench/torch_moe_train.py}
[ -f "$TORCH" ] || TORCH=/work/shared/bench/torch_moe_train.py
[ -f "$TORCH" ] || { echo "no PyTorch baseline script (set TORCH=.../torch_moe_train.py)"; exit 1; }
make build >/dev/null
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
case "$WHICH" in
  default) presets=(small fine) ;;
  all) presets=(tiny small fine) ;;
  tiny|small|fine) presets=("$WHICH") ;;
  *) echo "usage: $0 [tiny|small|fine|all]"; exit 2 ;;
esac

torch_tps() { # $1 python, $2 preset, rest: environment assignments
  local py=$1 p=$2; shift 2
  env ${1+"$@"} "$py" "$TORCH" --preset "$p" --threads "$THREADS" --steps "$STEPS" 2>&1 \
    | grep -oE 'tokens_per_s=[0-9.]+' | tail -1 | cut -d= -f2
}
PYPI=.venv-hf/bin/python
[ -x "$PYPI" ] && "$PYPI" -c 'import torch' 2>/dev/null || PYPI=
echo "# moec vs PyTorch training, $(date '+%Y-%m-%d %H:%M'), $THREADS threads, $STEPS timed steps"
echo "- $(build/moec bench train --preset tiny --steps 1 -t 1 | head -1 | sed 's/.*; cpu:/cpu:/')"
echo "- moec $(git rev-parse --short HEAD)$( [[ -n "$(git status --porcelain 2>/dev/null)" ]] && echo ' (dirty tree)'); PyTorch $(/usr/bin/python3 -c 'import torch;print(torch.__version__)') (Debian, OpenBLAS)${PYPI:+; PyTorch $("$PYPI" -c 'import torch;print(torch.__version__)') (PyPI, MKL + oneDNN)}"
echo
printf "| preset | Debian PyTorch, default / passive waiting | PyPI PyTorch, default / passive | moec fp32 | moec bf16 | moec fp32 / best PyTorch | moec bf16 / best PyTorch |\n|---|---:|---:|---:|---:|---:|---:|\n"
for p in "${presets[@]}"; do
  da=$(torch_tps /usr/bin/python3 "$p"); dp=$(torch_tps /usr/bin/python3 "$p" OMP_WAIT_POLICY=passive)
  pa=0; pp=0
  if [ -n "$PYPI" ]; then pa=$(torch_tps "$PYPI" "$p"); pp=$(torch_tps "$PYPI" "$p" OMP_WAIT_POLICY=passive); fi
  m32=$(build/moec bench train --preset "$p" --steps "$STEPS" -t "$THREADS" --matmul fp32 | awk '$1 == "tokens_per_s" { print $2 }')
  m16=$(build/moec bench train --preset "$p" --steps "$STEPS" -t "$THREADS" --matmul bf16 | awk '$1 == "tokens_per_s" { print $2 }')
  best=$(python3 -c "print(max(${da:-0}, ${dp:-0}, ${pa:-0}, ${pp:-0}))")
  printf "| %s | %s / %s | %s | %s | %s | %.2fx | %.2fx |\n" "$p" "$da" "$dp" "${PYPI:+$pa / $pp}" "$m32" "$m16" \
    "$(python3 -c "print($m32 / $best)")" "$(python3 -c "print($m16 / $best)")"
done
