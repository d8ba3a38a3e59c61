#!/usr/bin/env bash
# The main job: build a multi-domain, multilingual corpus from Debian packages, train a
# byte-level BPE tokenizer on it, tokenize it into shards, train a small MoE (~9M parameters,
# configs/tiny.json) for a few minutes on the CPU, evaluate it per domain, and generate text.
#   scripts/main_job.sh [STEPS]      (default 300 steps of 8 x 128 tokens, ~3-5 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-300}
MOEC_SKIP_HF=1 bash scripts/install-deps.sh   # the demo needs no transformers (make test installs it)
make build >/dev/null
M=build/moec
OUT=demo
mkdir -p "$OUT"

echo "== 1. corpus (Debian packages: KJV Bible, fortunes in 5 languages, man pages, C headers)"
/usr/bin/python3 scripts/build_corpus.py -o data/corpus
echo
echo "== 2. tokenizer (byte-level BPE, 4096 tokens)"
$M tokenizer train --vocab 4096 -o "$OUT/tokenizer.json" data/corpus/*.txt
echo
echo "== 3. token shards (train/val split per domain)"
$M data --tokenizer "$OUT/tokenizer.json" -o "$OUT/data" --force data/corpus/*.txt
echo
echo "== 4. training configs/tiny.json (Mixtral-style, 8 experts top-2) for $STEPS steps"
$M train --config configs/tiny.json --data "$OUT/data" --out "$OUT/tiny-moe" --overwrite \
    --steps "$STEPS" --batch 8 --seq 128 --lr 2e-3 --warmup 30 --eval-every 100 --save-every 100
echo
echo "== 5. validation loss per domain"
$M eval -m "$OUT/tiny-moe" --data "$OUT/data" --seq 128 --max-windows 64
echo
echo "== 6. generation (the checkpoint is Hugging Face layout: transformers loads it too)"
$M generate -m "$OUT/tiny-moe" -p "And God said" -n 48 --temp 0.7 --seed 1
$M generate -m "$OUT/tiny-moe" -p "#include <stdio.h>" -n 48 --temp 0.7 --seed 1
