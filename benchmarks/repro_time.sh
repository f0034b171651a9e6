#!/usr/bin/env bash
# Benchmark: wall time of the README's main command on a fresh clone (first run, then a no-op run).
# Usage: benchmarks/repro_time.sh [extra args for `secvit repro all`]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/env.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$root" "$work/clone"
cd "$work/clone"
export PATH="$root/.venv/bin:$PATH"
t0=$(date +%s.%N); secvit repro all "$@" > "$work/first.log" 2>&1; t1=$(date +%s.%N)
secvit repro all "$@" > "$work/second.log" 2>&1; t2=$(date +%s.%N)
printf 'first run (everything stale): %.1f s\nsecond run (nothing changed): %.1f s\n' "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t1" | bc)"
