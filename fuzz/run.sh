#!/usr/bin/env bash
# fuzz/run.sh — builds the libFuzzer harnesses (clang, ASan + UBSan) in build-fuzz/ and runs
# each for a bounded time on its seed corpus (fuzz/make_seeds.py), its growing corpus
# (build-fuzz/corpus/<name>, kept between runs) and its regression inputs (tests/fuzz/<name>).
#
#   bash fuzz/run.sh --minutes 10            # every harness 10 minutes (a local campaign)
#   bash fuzz/run.sh --seconds 30            # what CI runs (.ci/run)
#   bash fuzz/run.sh --seconds 60 config data  # some harnesses only
#   bash fuzz/run.sh --no-build --minutes 15 data  # the binaries and seeds already built (a
#                                            # long campaign that source edits must not change)
#
# Prints, and writes to build-fuzz/fuzz-stats.md, a table of executions, exec/s, coverage
# (edges) and features per harness. A crash, leak, timeout or OOM is copied into
# tests/fuzz/<name>/ (named by libFuzzer after the input's SHA-1) so it stays a regression
# input forever, and the script exits 1. Needs clang with libFuzzer (Debian: clang,
# libclang-rt-<version>-dev); JOBS (default 2) sets the build parallelism.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=60
names=()
build=1
while [ $# -gt 0 ]; do
    case "$1" in
    --minutes) secs=$(( $2 * 60 )); shift 2 ;;
    --seconds) secs=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) names+=("$1"); shift ;;
    esac
done
all=(safetensors st_index gguf config tokenizer_load tokenizer_text bpe_train data train_state cli_args export_vocab hf_files)
[ ${#names[@]} -gt 0 ] || names=("${all[@]}")
command -v clang >/dev/null || { echo "fuzz/run.sh: clang not found (apt-get install -y clang libclang-rt-14-dev)" >&2; exit 1; }

B=build-fuzz
if [ $build = 1 ]; then
    CC=clang cmake -S . -B $B -DMOEC_FUZZ=ON -DMOEC_SANITIZE=ON \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build $B -j "${JOBS:-2}" --target moec $(printf 'fuzz_%s ' "${names[@]}") >/dev/null
    rm -rf $B/seeds
    python3 fuzz/make_seeds.py --moec $B/moec --out $B/seeds >/dev/null
fi

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
stats=$B/fuzz-stats.md
{
    echo "| harness | seconds | executions | exec/s | edges (cov) | features (ft) | corpus | result |"
    echo "|---|---:|---:|---:|---:|---:|---:|---|"
} > "$stats"
failed=0
for h in "${names[@]}"; do
    rm -rf $B/crashes/$h  # only this run's findings
    mkdir -p $B/corpus/$h $B/crashes/$h
    log=$B/fuzz-$h.log
    set +e
    $B/fuzz/fuzz_$h -max_total_time="$secs" -print_final_stats=1 -timeout=20 -rss_limit_mb=2560 \
        -max_len=1048576 -artifact_prefix=$B/crashes/$h/ $B/corpus/$h $B/seeds/$h tests/fuzz/$h >"$log" 2>&1
    rc=$?
    set -e
    execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo 0)
    speed=$(grep -oE 'stat::average_exec_per_sec: +[0-9]+' "$log" | tail -1 | grep -o '[0-9]*$' || echo 0)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo 0)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo 0)
    corpus=$(ls $B/corpus/$h | wc -l)
    result=ok
    found=$(ls $B/crashes/$h 2>/dev/null | head -20)
    if [ $rc -ne 0 ] || [ -n "$found" ]; then
        result="FAIL (exit $rc; see $log)"
        failed=1
        for f in $found; do cp "$B/crashes/$h/$f" "tests/fuzz/$h/$f"; echo "fuzz/run.sh: $h: kept tests/fuzz/$h/$f" >&2; done
        grep -m3 -E 'ERROR|runtime error|SUMMARY' "$log" >&2 || true
    fi
    echo "| $h | $secs | $execs | $speed | $cov | $ft | $corpus | $result |" | tee -a "$stats"
done
echo "fuzz/run.sh: table in $stats"
exit $failed
