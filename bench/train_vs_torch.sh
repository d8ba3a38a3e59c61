#!/usr/bin/env bash
# Training throughput, moec vs the PyTorch baseline (shared/bench/torch_moe_train.py), side by
# side in one run: the same model, batch, optimizer and thread count (`moec bench train --preset P`
# copies the baseline's PRESETS table), random tokens, forward + backward + AdamW, the median
# step after a warm-up step in both.
#   bench/train_vs_torch.sh [tiny|small|fine|all]        (default: small and fine, the issue's presets)
# The peer is measured at its best setting: PyTorch (Debian's, with OpenBLAS) runs both with
# OpenMP's default waiting (libgomp: spin, then sleep) and with OMP_WAIT_POLICY=passive, and the faster one is the
# reference; the table names it. Environment: THREADS (2), STEPS (5), TORCH (the baseline script).
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

torch_tps() { # $1 preset, rest: environment assignments
  local p=$1; shift
  env ${1+"$@"} /usr/bin/python3 "$TORCH" --preset "$p" --threads "$THREADS" --steps "$STEPS" 2>&1 \
    | grep -oE 'tokens_per_s=[0-9.]+' | tail -1 | cut -d= -f2
}

echo "# moec vs PyTorch training, $(date '+%Y-%m-%d %H:%M'), $THREADS threads, $STEPS timed steps"
echo "- $(build/moec bench train --preset tiny --steps 1 -t 1 | head -1 | sed 's/.*; cpu:/cpu:/')"
echo "- moec $(git rev-parse --short HEAD)$( [[ -n "$(git status --porcelain 2>/dev/null)" ]] && echo ' (dirty tree)'); PyTorch $(/usr/bin/python3 -c 'import torch;print(torch.__version__)') (Debian, OpenBLAS)"
echo
printf "| preset | PyTorch, default OpenMP waiting | PyTorch, OMP_WAIT_POLICY=passive | moec | moec / best PyTorch |\n|---|---:|---:|---:|---:|\n"
for p in "${presets[@]}"; do
  ta=$(torch_tps "$p")
  tp=$(torch_tps "$p" OMP_WAIT_POLICY=passive)
  m=$(build/moec bench train --preset "$p" --steps "$STEPS" -t "$THREADS" | awk '$1 == "tokens_per_s" { print $2 }')
  best=$(python3 -c "print(max($ta, $tp))")
  printf "| %s | %s | %s | %s | %.2fx |\n" "$p" "$ta" "$tp" "$m" "$(python3 -c "print($m / $best)")"
done
