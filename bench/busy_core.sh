#!/usr/bin/env bash
# bench/busy_core.sh — runs a command while another process keeps one core busy (a
# single-threaded spin loop), then stops the loop: how a benchmark behaves on a machine that is
# not idle (issue 8: decode with -t 2 must keep >= 0.8x of -t 1 beside such a job).
#   bench/busy_core.sh build/moec bench -m bench/work/models/bench-M -p 0 -n 32 -t 2
# The command's exit status is the script's.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: bench/busy_core.sh COMMAND [ARGS...]" >&2; exit 2; }
# the loop runs in its own shell (one thread, never sleeps)
bash -c 'while :; do :; done' &
busy=$!
trap 'kill "$busy" 2>/dev/null || true; wait "$busy" 2>/dev/null || true' EXIT
sleep 0.2 # let the scheduler see the busy loop before the command starts
"$@"
