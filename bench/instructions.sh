#!/usr/bin/env bash
# Instructions a durable write costs the control plane, and the durable do-nothing server
# (scenario 1's limit), counted by valgrind's callgrind under the same `AssignGroup` load.
#
#   bench/instructions.sh [SECONDS]    each server: two turns of SECONDS (default 20) of
#                                      writes-ab, 64 calls in flight
#
# Counts, unlike times, do not move with what else the machine is doing: two runs of the
# same build agree within about 0.6%, so a change of a few percent is seen in one run
# (bench/FINDINGS.md, round 32). Under valgrind every thread takes turns on one core, so
# batches differ from a real run's and no time here means anything; the counts are per
# write (each write appends one event: the writes are the sequencer's `BatchPlan::add`
# calls). Kernel work (system calls, wake-ups) is not counted. valgrind reports a CPU
# without SHA extensions, so SHA-256 runs in software here and is shown apart.
#
# Environment: BENCH_WORK_DIR (scratch, default target/bench-work/instructions);
# SIGNPOST_BIN, another build's `signpost` binary to count instead of this tree's (to
# compare two builds: the durable limit is this tree's either way).
set -euo pipefail

SECONDS_EACH="${1:-20}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WORK="${BENCH_WORK_DIR:-$ROOT/target/bench-work/instructions}"
log() { echo "[instructions.sh] $*" >&2; }

if ! command -v valgrind >/dev/null || ! command -v callgrind_annotate >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >&2
  else
    log "valgrind is needed"; exit 1
  fi
fi

# Each binary on its own, as bench/run.sh builds them.
for package in signpost-bench signpost; do
  cargo build --release -p "$package" >&2
done
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
BIN="${TARGET_DIR:-$ROOT/target}/release"
BENCH="$BIN/signpost-bench"
SIGNPOST="${SIGNPOST_BIN:-$BIN/signpost}"

rm -rf "$WORK"
mkdir -p "$WORK"
"$BENCH" populate --data-dir "$WORK/populated" --organizations 4096 >&2

# The control plane's answer to one call of the load's shape, for the durable limit.
PORT="$("$BENCH" free-port)"
"$SIGNPOST" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/populated" \
  > "$WORK/answer-server.log" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true' EXIT
until grep -q "listening on" "$WORK/answer-server.log"; do
  kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/answer-server.log" >&2; exit 1; }
  sleep 0.2
done
ANSWER="$("$BENCH" sample-answer --url "http://127.0.0.1:$PORT" --populated "$WORK/populated")"
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true

# count NAME COMMAND...: runs COMMAND under callgrind on a fresh port, the load against it,
# and prints "NAME writes instructions sha256".
count() {
  local name="$1"; shift
  local port out
  port="$("$BENCH" free-port)"
  out="$WORK/callgrind.$name"
  rm -rf "$WORK/$name"
  cp -a "$WORK/populated" "$WORK/$name"
  # The command line names the data directory and the port as DIR and PORT.
  local args=()
  for arg in "$@"; do
    arg="${arg//DIR/$WORK/$name}"
    args+=("${arg//PORT/$port}")
  done
  valgrind --tool=callgrind --callgrind-out-file="$out" --dump-instr=no "${args[@]}" \
    > "$WORK/$name.log" 2>&1 &
  local pid=$!
  until (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { cat "$WORK/$name.log" >&2; exit 1; }
    sleep 0.5
  done
  sleep 2
  # Start-up is not counted: from here to the dump, the load and nothing else.
  callgrind_control -z "$pid" >/dev/null
  "$BENCH" writes-ab --a "http://127.0.0.1:$port" --b "http://127.0.0.1:$port" --rounds 1 \
    --in-flight 64 --populated "$WORK/$name" --seconds "$SECONDS_EACH" > "$WORK/$name.load" 2>&1
  callgrind_control -d "$pid" >/dev/null
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local tree="$WORK/$name.tree"
  callgrind_annotate --tree=caller --inclusive=yes --threshold=100 "$out.1" > "$tree" 2>/dev/null
  local total writes sha
  total="$(sed -n 's/^ *\([0-9,]*\) (100.0%)  PROGRAM TOTALS.*/\1/p' "$tree" | tr -d ,)"
  writes="$(grep -B1 '\*  ???:signpost_eventlog::batch::BatchPlan::add ' "$tree" \
    | sed -n 's/.*< ???:signpost_eventlog::file_store::sequencer::Sequencer::run (\([0-9,]*\)x).*/\1/p' \
    | tr -d ,)"
  sha="$(sed -n 's/^ *\([0-9,]*\) ([ 0-9.]*%)  \*  ???:sha2::sha256::compress256 .*/\1/p' "$tree" \
    | head -n 1 | tr -d ,)"
  echo "$name ${writes:-0} ${total:-0} ${sha:-0}"
}

{
  count control-plane "$SIGNPOST" serve --listen 127.0.0.1:PORT --data-dir DIR
  count durable-limit "$BENCH" durable-ceiling --listen 127.0.0.1:PORT --data-dir DIR/limit-log \
    --assign-answer-hex "$ANSWER"
} > "$WORK/counts.txt"

awk '
  { name[NR] = $1; writes[NR] = $2; total[NR] = $3; sha[NR] = $4 }
  END {
    printf "| server | writes counted | instructions a write | of which SHA-256 (software here) | without SHA-256 |\n"
    printf "|---|---|---|---|---|\n"
    for (i = 1; i <= NR; i++) {
      if (writes[i] == 0) { print "no writes counted for " name[i] > "/dev/stderr"; exit 1 }
      w[i] = (total[i] - sha[i]) / writes[i]
      printf "| %s | %d | %.0f | %.0f | %.0f |\n", name[i], writes[i], total[i] / writes[i], sha[i] / writes[i], w[i]
    }
    if (NR == 2) printf "\ncontrol plane / durable limit, without SHA-256: %.2f×\n", w[1] / w[2]
  }' "$WORK/counts.txt"
