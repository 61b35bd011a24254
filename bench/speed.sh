#!/usr/bin/env bash
# Is this machine at its usual speed? About 30 seconds: the do-nothing unary gRPC call (the
# health check), 64 in flight, measured by the suite's own client against a control plane
# on a small populated directory, compared with the rate scenario 2's do-nothing call had
# in a normal hour (REFERENCE_PER_SECOND, round 31's report). A shared machine here has run
# for whole sessions at half its usual speed (bench/FINDINGS.md, rounds 32 to 34); a full
# `bench/run.sh` then misses absolute goals it meets otherwise, so check first.
#
#   bench/speed.sh    prints the rate and its ratio to the reference; exits 0 at 85% of the
#                     reference or more, 3 below it (the machine is slow: keep the last
#                     report), 1 if it could not measure
#
# Environment: BENCH_WORK_DIR (scratch, default target/bench-work/speed).
set -uo pipefail

REFERENCE_PER_SECOND=74716
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WORK="${BENCH_WORK_DIR:-$ROOT/target/bench-work/speed}"
log() { echo "[speed.sh] $*" >&2; }

for package in signpost-bench signpost; do
  cargo build --release -p "$package" >&2 || { log "build of $package failed"; exit 1; }
done
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
BIN="${TARGET_DIR:-$ROOT/target}/release"

rm -rf "$WORK"
mkdir -p "$WORK"
"$BIN/signpost-bench" populate --data-dir "$WORK/data" --organizations 1024 >/dev/null 2>&1 \
  || { log "populate failed"; exit 1; }
PORT="$("$BIN/signpost-bench" free-port)"
"$BIN/signpost" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" > "$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null' EXIT
until (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
  kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
  sleep 0.2
done
# One turn each way (A and B are the same server): the do-nothing call's rate is each
# turn's `noop`; the better of the two is taken, as a slow minute only lowers it.
RATE="$("$BIN/signpost-bench" resolve-ab --a "http://127.0.0.1:$PORT" --b "http://127.0.0.1:$PORT" \
  --rounds 1 --seconds 5 --routes 1024 --token-file "$WORK/data/bench-admin.token" 2>/dev/null \
  | sed -n 's/.*"noop":\([0-9.]*\).*/\1/p' | sort -rn | head -n 1)"
[ -n "$RATE" ] || { log "no rate measured"; exit 1; }
RATIO="$(awk -v rate="$RATE" -v reference="$REFERENCE_PER_SECOND" 'BEGIN { printf "%.2f", rate / reference }')"
if awk -v ratio="$RATIO" 'BEGIN { exit !(ratio >= 0.85) }'; then
  VERDICT="usual speed"; STATUS=0
else
  VERDICT="slow: keep the last full report"; STATUS=3
fi
printf 'do-nothing unary call, 64 in flight: %.0f/s, %s of the %d/s of a normal hour (%s)\n' \
  "$RATE" "$RATIO" "$REFERENCE_PER_SECOND" "$VERDICT"
exit "$STATUS"
