#!/usr/bin/env bash
# scripts/tsan.sh — ThreadSanitizer build of moec (build-tsan/, -DMOEC_TSAN=ON) and a run of
# everything that executes threaded code at 2+ threads: the ctest tests labelled `threads`
# (tests/tests.cmake: kernels, forward/backward with 1-3 threads, the MoE layer, the trainer's
# gradients) and three steps of `moec train -t 2` (forward, backward, AdamW, a checkpoint).
# Any report fails the run (halt_on_error=1, exit 66). moec's threads are its own pthreads pool
# (core/threads.c), so any compiler works (CC=gcc or clang; gcc if no clang).
#
#   bash scripts/tsan.sh            # what .ci/run runs; JOBS (default 2) = build parallelism
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BUILD:-build-tsan}
CC=${CC:-$(command -v gcc || command -v clang)} cmake -S . -B $B -DMOEC_TSAN=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DMOEC_WERROR=ON >/dev/null
cmake --build $B -j "${JOBS:-2}" >/dev/null
# ignore_noninstrumented_modules: accesses inside uninstrumented libraries (OpenBLAS, on one
# thread) are not reported; every access in moec's own code is.
export TSAN_OPTIONS="halt_on_error=1:ignore_noninstrumented_modules=1:second_deadlock_stack=1"
export MOEC_THREADS=${MOEC_THREADS:-3}  # the default pool: more threads than the smallest CI machine's cores
(cd $B && ctest -L threads --output-on-failure -j 1)

T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cat README.md docs/*.md > "$T/corpus.txt"
$B/moec tokenizer train --vocab 300 -o "$T/tok.json" "$T/corpus.txt" >/dev/null
$B/moec data -t "$T/tok.json" -o "$T/data" --force --val-fraction 0.1 "$T/corpus.txt" >/dev/null
cat > "$T/cfg.json" <<'JSON'
{"model_type": "mixtral", "vocab_size": 300, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
 "num_attention_heads": 4, "num_key_value_heads": 2, "num_local_experts": 4, "num_experts_per_tok": 2,
 "max_position_embeddings": 128, "tie_word_embeddings": false}
JSON
$B/moec train --config "$T/cfg.json" --data "$T/data" --out "$T/run" --steps 3 --batch 4 --seq 32 -t 2 \
    --eval-every 0 --eval-batches 2 --save-every 2 --no-progress
echo "scripts/tsan.sh: no ThreadSanitizer report"
