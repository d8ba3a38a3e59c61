#!/usr/bin/env bash
# Training throughput, moec vs the PyTorch baseline (shared/bench/torch_moe_train.py), same
# model shapes (presets small and fine), batch 8 x seq 256, 2 threads, side by side in one run.
#   bench/train_vs_torch.sh [small|fine|all] [DATA_DIR]
# DATA_DIR: token shards from `moec data` with vocab <= 8192 (default demo/data, made by
# `make demo`); the PyTorch script trains on random tokens: throughput does not depend on them.
set -euo pipefail
cd "$(dirname "$0")/.."
WHICH=${1:-all}
DATA=${2:-demo/data}
STEPS=${STEPS:-5}
THREADS=${THREADS:-2}
TORCH=${TORCH:-../shared/bench/torch_moe_train.py}
[ -f "$TORCH" ] || TORCH=/work/shared/bench/torch_moe_train.py
[ -d "$DATA" ] || { echo "no data dir $DATA: run make demo first (or pass one)"; exit 1; }
make build >/dev/null
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
presets=(small fine)
[ "$WHICH" = all ] || presets=("$WHICH")
printf "| preset | engine | tokens/s | moec/torch |\n|---|---|---:|---:|\n"
for p in "${presets[@]}"; do
  t=$(/usr/bin/python3 "$TORCH" --preset "$p" --threads "$THREADS" --steps "$STEPS" 2>&1 | grep -oE 'tokens_per_s=[0-9.]+' | tail -1 | cut -d= -f2)
  out=$(mktemp -d)
  build/moec train --config "configs/$p.json" --data "$DATA" --out "$out/run" --steps $((STEPS + 1)) --batch 8 --seq 256 \
      -t "$THREADS" --eval-every 0 --save-every 0 --no-progress --warmup 1 >/dev/null
  # median tokens/s over steps 2.. (step 1 pays first-touch page faults; torch also drops its first)
  m=$(python3 -c "import json; v=sorted(json.loads(l)['tokens_per_s'] for l in list(open('$out/run/train_log.jsonl'))[1:] if 'tokens_per_s' in l); print(v[len(v)//2])")
  rm -rf "$out"
  printf "| %s | PyTorch %s (Debian, OpenBLAS) | %s | |\n" "$p" "$(/usr/bin/python3 -c 'import torch;print(torch.__version__)')" "$t"
  printf "| %s | moec | %s | %.2fx |\n" "$p" "$m" "$(python3 -c "print($m/$t)")"
done
