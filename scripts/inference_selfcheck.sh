#!/usr/bin/env bash
# Inference self-check: build tiny random checkpoints of each
# supported architecture in Hugging Face layout, then show `moec info`, `moec generate`, and
# how closely moec's logits agree with an independent PyTorch reference.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
make build >/dev/null
PY=.venv/bin/python
OUT=demo/models
mkdir -p "$OUT"
echo "== building tiny checkpoints (random bf16/f16/f32 weights, HF layout) in $OUT"
$PY tests/ref/make_tiny.py --out "$OUT" >/dev/null
$PY scripts/demo_tokenizer.py "$OUT"/*/ >/dev/null
for d in "$OUT"/*/; do
  echo
  echo "================ $(basename "$d")"
  ./build/moec info -m "$d"
  ./build/moec generate -m "$d" -p "The quick brown fox" -n 24 --temp 0.8 --seed 1
done
echo
echo "== agreement with the PyTorch reference (tests/ref/torch_ref.py), 32 tokens:"
$PY scripts/check_reference.py --moec ./build/moec "$OUT"/*/
