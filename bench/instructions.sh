#!/usr/bin/env bash
# Instructions a durable write costs the control plane, and the durable do-nothing server
# (scenario 1's limit), counted by valgrind's callgrind under the same `AssignGroup` load.
#
#   bench/instructions.sh [--cache] [--kernel] [--fanout] [SECONDS]
#       each server: two turns of SECONDS (default 20) of writes-ab, 64 calls in flight
#   --cache   callgrind also simulates the first-level caches: instruction-cache misses and
#             data-cache read and write misses a write (the simulated last level is not
#             this machine's, so it is left out). About a third as many writes are counted.
#   --kernel  then runs each server without valgrind, under the same load, and counts what
#             callgrind cannot see: context switches a write (every thread, from /proc), and
#             system calls a write (strace -c -f over a second load; strace slows the
#             server, so batches, and the calls a write, differ a little from a free run's),
#             and CPU a write by thread (user and system, from every thread's /proc stat over
#             the first load; the control plane names its runtime's threads
#             signpost-worker and signpost-block, its blocking threads: the audit
#             database's writes).
#   --fanout  then counts scenario 3's fan-out the same way: instructions a delivery (one
#             change reaching one stream) on the control plane (fanout-ab) and on the
#             do-nothing stream server given the control plane's route (scenario 3's
#             route-sized limit, floor-fanout), 2,000 streams; each server runs the load
#             with 20 changes and again with 60, and the difference is divided by the
#             deliveries it adds, so opening the streams and the warm-up cancel out.
#
# Counts, unlike times, do not move with what else the machine is doing: two runs of the
# same build agree within about 0.6%, so a change of a few percent is seen in one run
# (bench/FINDINGS.md, round 32). Under valgrind every thread takes turns on one core, so
# batches differ from a real run's and no time here means anything; the counts are per
# write (each write appends one event: the writes are the sequencer's `BatchPlan::add`
# calls). Kernel work (system calls, wake-ups) is not counted by callgrind (--kernel counts
# the calls, not their time). valgrind reports a CPU without SHA extensions, so SHA-256
# runs in software here and is shown apart.
#
# Environment: BENCH_WORK_DIR (scratch, default target/bench-work/instructions);
# SIGNPOST_BIN, another build's `signpost` binary to count instead of this tree's (to
# compare two builds: the durable limit is this tree's either way).
set -euo pipefail

CACHE=""; KERNEL=""; FANOUT=""; SECONDS_EACH=20
for arg in "$@"; do
  case "$arg" in
    --cache) CACHE=1 ;;
    --kernel) KERNEL=1 ;;
    --fanout) FANOUT=1 ;;
    [0-9]*) SECONDS_EACH="$arg" ;;
    *) echo "usage: bench/instructions.sh [--cache] [--kernel] [--fanout] [SECONDS]" >&2; exit 2 ;;
  esac
done
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WORK="${BENCH_WORK_DIR:-$ROOT/target/bench-work/instructions}"
log() { echo "[instructions.sh] $*" >&2; }

# need COMMAND PACKAGE: installs PACKAGE from Debian when COMMAND is missing.
need() {
  command -v "$1" >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >&2
  else
    log "$1 is needed (Debian package $2)"; exit 1
  fi
}
need valgrind valgrind
need callgrind_annotate valgrind
if [ -n "$KERNEL" ]; then need strace strace; fi
CACHE_SIM=no
if [ -n "$CACHE" ]; then CACHE_SIM=yes; fi

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

# launch NAME COMMAND...: copies the populated directory to NAME, starts COMMAND in the
# background (its command line names the data directory and the port as DIR and PORT), its
# output in NAME.log, and waits until it listens. Sets PORT and PID.
launch() {
  local name="$1"; shift
  PORT="$("$BENCH" free-port)"
  rm -rf "${WORK:?}/$name"
  cp -a "$WORK/populated" "$WORK/$name"
  local args=()
  for arg in "$@"; do
    arg="${arg//DIR/$WORK/$name}"
    args+=("${arg//PORT/$PORT}")
  done
  "${args[@]}" > "$WORK/$name.log" 2>&1 &
  PID=$!
  until (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
    kill -0 "$PID" 2>/dev/null || { cat "$WORK/$name.log" >&2; exit 1; }
    sleep 0.5
  done
}

# count NAME COMMAND...: runs COMMAND under callgrind on a fresh port, the load against it,
# and prints "NAME writes sha256 instructions I1-misses D1-read-misses D1-write-misses".
count() {
  local name="$1"; shift
  local out="$WORK/callgrind.$name"
  launch "$name" valgrind --tool=callgrind --callgrind-out-file="$out" --dump-instr=no \
    --cache-sim="$CACHE_SIM" "$@"
  local port="$PORT" pid="$PID"
  sleep 2
  # Start-up is not counted: from here to the dump, the load and nothing else.
  callgrind_control -z "$pid" >/dev/null
  "$BENCH" writes-ab --a "http://127.0.0.1:$port" --b "http://127.0.0.1:$port" --rounds 1 \
    --in-flight 64 --populated "$WORK/$name" --seconds "$SECONDS_EACH" > "$WORK/$name.load" 2>&1
  callgrind_control -d "$pid" >/dev/null
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local tree="$WORK/$name.tree"
  callgrind_annotate --tree=caller --inclusive=yes --threshold=100 "$out.1" > "$tree" 2>/dev/null
  local writes sha totals
  writes="$(grep -B1 '\*  ???:signpost_eventlog::batch::BatchPlan::add ' "$tree" \
    | sed -n 's/.*< ???:signpost_eventlog::file_store::sequencer::Sequencer::run (\([0-9,]*\)x).*/\1/p' \
    | tr -d ,)"
  sha="$(grep -m 1 '\*  ???:sha2::sha256::compress256 ' "$tree" | awk '{ gsub(",", ""); print $1 }')"
  # The totals line holds one count per event, in the order "Events shown:" names them
  # (Ir alone, or with --cache Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw).
  totals="$(awk '
    /^Events shown:/ { n = NF - 2; for (i = 1; i <= n; i++) event[i] = $(i + 2) }
    /PROGRAM TOTALS/ {
      gsub(",", "")
      for (i = 1; i <= n; i++) count[event[i]] = $(2 * i - 1)
      # As text: the counts pass 2^31, where awk'"'"'s %d stops.
      for (i = 1; i <= 4; i++) { e = i == 1 ? "Ir" : i == 2 ? "I1mr" : i == 3 ? "D1mr" : "D1mw"
        printf "%s ", (e in count) ? count[e] : 0 }
      exit
    }' "$tree")"
  echo "$name ${writes:-0} ${sha:-0} ${totals:-0 0 0 0}"
}

# kernel NAME COMMAND...: runs COMMAND without valgrind, the load against it twice: the
# first counting context switches (every thread's, from /proc), the second under strace -c
# -f. Prints "NAME writes switches traced-writes" and the strace table to NAME.strace.
kernel() {
  local name="$1"; shift
  launch "$name-kernel" "$@"
  local port="$PORT" pid="$PID"
  sleep 1
  switches() { cat /proc/"$pid"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { n += $2 } END { print n + 0 }'; }
  # threads: every thread's id, name (numbered names such as sled-io-3 without the
  # number), user and system CPU ticks, one line a thread.
  threads() {
    local task
    for task in /proc/"$pid"/task/*; do
      printf '%s %s %s\n' "${task##*/}" "$(sed 's/-[0-9]*$//' "$task/comm" 2>/dev/null)" \
        "$(awk '{ print $14, $15 }' "$task/stat" 2>/dev/null)"
    done
  }
  # load OUT: two turns of writes-ab; prints the writes they made.
  load() {
    "$BENCH" writes-ab --a "http://127.0.0.1:$port" --b "http://127.0.0.1:$port" --rounds 1 \
      --in-flight 64 --populated "$WORK/$name-kernel" --seconds "$SECONDS_EACH" > "$1" 2>&1
    sed -n 's/.*"writes":\([0-9.]*\).*/\1/p' "$1" | awk -v s="$SECONDS_EACH" '{ n += $1 * s } END { printf "%d", n }'
  }
  local before after writes traced tracer
  before="$(switches)"
  threads > "$WORK/$name.threads-before"
  writes="$(load "$WORK/$name-kernel.load")"
  threads > "$WORK/$name.threads-after"
  after="$(switches)"
  strace -c -f -p "$pid" -o "$WORK/$name.strace" 2>/dev/null &
  tracer=$!
  sleep 1
  traced="$(load "$WORK/$name-kernel.traced")"
  kill -INT "$tracer"; wait "$tracer" 2>/dev/null || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$name $writes $((after - before)) $traced"
}

CONTROL_PLANE=("$SIGNPOST" serve --listen 127.0.0.1:PORT --data-dir DIR)
DURABLE_LIMIT=("$BENCH" durable-ceiling --listen 127.0.0.1:PORT --data-dir DIR/limit-log
  --assign-answer-hex "$ANSWER")
{
  count control-plane "${CONTROL_PLANE[@]}"
  count durable-limit "${DURABLE_LIMIT[@]}"
} > "$WORK/counts.txt"

awk -v cache="$CACHE" '
  { name[NR] = $1; writes[NR] = $2; sha[NR] = $3; total[NR] = $4; i1[NR] = $5; d1r[NR] = $6; d1w[NR] = $7 }
  END {
    printf "| server | writes counted | instructions a write | of which SHA-256 (software here) | without SHA-256 |"
    if (cache) printf " instruction-cache misses a write | data-cache read misses | data-cache write misses |"
    printf "\n|---|---|---|---|---|%s\n", cache ? "---|---|---|" : ""
    for (i = 1; i <= NR; i++) {
      if (writes[i] == 0) { print "no writes counted for " name[i] > "/dev/stderr"; exit 1 }
      w[i] = (total[i] - sha[i]) / writes[i]
      printf "| %s | %d | %.0f | %.0f | %.0f |", name[i], writes[i], total[i] / writes[i], sha[i] / writes[i], w[i]
      if (cache) printf " %.0f | %.0f | %.0f |", i1[i] / writes[i], d1r[i] / writes[i], d1w[i] / writes[i]
      printf "\n"
    }
    if (NR == 2) {
      printf "\ncontrol plane / durable limit, without SHA-256: %.2f×\n", w[1] / w[2]
      if (cache) printf "instruction-cache misses: %.2f×; data-cache misses (read and write): %.2f×\n",
        (i1[1] / writes[1]) / (i1[2] / writes[2]),
        ((d1r[1] + d1w[1]) / writes[1]) / ((d1r[2] + d1w[2]) / writes[2])
    }
  }' "$WORK/counts.txt"

if [ -n "$KERNEL" ]; then
  {
    kernel control-plane "${CONTROL_PLANE[@]}"
    kernel durable-limit "${DURABLE_LIMIT[@]}"
  } > "$WORK/kernel.txt"
  echo
  echo "| server (no valgrind) | writes | context switches a write | writes traced | system calls a write, traced | of which futex | fdatasync | pwrite64 |"
  echo "|---|---|---|---|---|---|---|---|"
  while read -r name writes switches traced; do
    # strace -c's table: % time, seconds, usecs/call, calls, [errors], syscall.
    awk -v name="$name" -v writes="$writes" -v switches="$switches" -v traced="$traced" '
      $1 ~ /^[0-9.]+$/ && NF >= 5 { calls[$NF] = $4 }
      END {
        if (writes == 0 || traced == 0) { print "no writes for " name > "/dev/stderr"; exit 1 }
        printf "| %s | %d | %.2f | %d | %.2f | %.2f | %.2f | %.2f |\n", name, writes, switches / writes,
          traced, calls["total"] / traced, calls["futex"] / traced, calls["fdatasync"] / traced,
          calls["pwrite64"] / traced
      }' "$WORK/$name.strace"
  done < "$WORK/kernel.txt"
  # CPU a write by thread: the ticks each thread spent during the counted load (a thread
  # that started during it counts from zero; one that ended during it is left out, its
  # last ticks unknown), summed by name.
  echo
  echo "| thread (no valgrind) | control plane: CPU a write, user + system (µs) | durable limit |"
  echo "|---|---|---|"
  hz="$(getconf CLK_TCK)"
  while read -r name writes _; do
    awk -v name="$name" -v writes="$writes" -v hz="$hz" '
      FNR == 1 { file++ }
      file == 1 { before[$1] = $(NF - 1) + $NF; ubefore[$1] = $(NF - 1); next }
      # The runtime workers: the control plane names them, the benchmark binary (the
      # limit) keeps the tokio default, which its blocking threads would share.
      { key = $2 ~ /^(signpost-worker|tokio-rt-worker)$/ ? "runtime-workers" : $2
        seen[key] += $(NF - 1) + $NF - before[$1]; useen[key] += $(NF - 1) - ubefore[$1] }
      END {
        for (key in seen) if (seen[key] > 0)
          printf "%s %s %.1f %.1f\n", name, key, seen[key] * 1e6 / hz / writes, useen[key] * 1e6 / hz / writes
      }' "$WORK/$name.threads-before" "$WORK/$name.threads-after"
  done < "$WORK/kernel.txt" > "$WORK/threads.txt"
  # A row a thread name, the busiest first; then every thread together.
  awk '
    { total[$1] += $3; cpu[$2, $1] = sprintf("%.1f (%.1f user)", $3, $4); busy[$2] += $3 }
    END {
      for (thread in busy) {
        a = ((thread, "control-plane") in cpu) ? cpu[thread, "control-plane"] : "-"
        b = ((thread, "durable-limit") in cpu) ? cpu[thread, "durable-limit"] : "-"
        printf "%.3f\t| %s | %s | %s |\n", busy[thread], thread, a, b
      }
    }' "$WORK/threads.txt" | sort -k1,1 -rn | cut -f2-
  awk '{ total[$1] += $3 } END {
    printf "| every thread | %.1f | %.1f |\n", total["control-plane"], total["durable-limit"] }' \
    "$WORK/threads.txt"
fi

# The fan-out loads: LOAD URL DIR CHANGES. The control plane's makes two turns
# (fanout-ab's A and B, the same server); the limit's one.
FANOUT_STREAMS=2000
control_plane_fanout() {
  "$BENCH" fanout-ab --a "$1" --b "$1" --rounds 1 --streams "$FANOUT_STREAMS" --changes "$3" \
    --populated "$2"
}
limit_fanout() {
  "$BENCH" floor-fanout --url "$1" --streams "$FANOUT_STREAMS" --changes "$3" \
    --store-epoch "$STORE_EPOCH"
}

# fanout NAME TURNS LOAD COMMAND...: runs COMMAND under callgrind, then the function LOAD
# with 20 and with 60 changes, each counted on its own, and prints "NAME deliveries-added
# instructions-added" (TURNS: how many turns of the streams one LOAD makes).
fanout() {
  local name="$1" turns="$2" load="$3"; shift 3
  local out="$WORK/callgrind.$name"
  launch "$name" valgrind --tool=callgrind --callgrind-out-file="$out" --dump-instr=no "$@"
  local port="$PORT" pid="$PID"
  sleep 2
  local changes dump=0 totals=()
  for changes in 20 60; do
    callgrind_control -z "$pid" >/dev/null
    "$load" "http://127.0.0.1:$port" "$WORK/$name" "$changes" > "$WORK/$name.load-$changes" 2>&1
    callgrind_control -d "$pid" >/dev/null
    dump=$((dump + 1))
    totals+=("$(callgrind_annotate "$out.$dump" 2>/dev/null \
      | awk '/PROGRAM TOTALS/ { gsub(",", ""); print $1; exit }')")
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$name $((40 * turns * FANOUT_STREAMS)) $((totals[1] - totals[0]))"
}

if [ -n "$FANOUT" ]; then
  {
    fanout fanout-control-plane 2 control_plane_fanout "${CONTROL_PLANE[@]}"
    # The route the control plane's changes make, for the limit to send.
    launch fanout-route "${CONTROL_PLANE[@]}"
    read -r ROUTE_HEX STORE_EPOCH < <("$BENCH" sample-route --url "http://127.0.0.1:$PORT" \
      --populated "$WORK/fanout-route")
    kill "$PID"; wait "$PID" 2>/dev/null || true
    fanout fanout-limit 1 limit_fanout "$BENCH" stream-ceiling --listen 127.0.0.1:PORT \
      --route-hex "$ROUTE_HEX" --store-epoch "$STORE_EPOCH"
  } > "$WORK/fanout.txt"
  echo
  echo "| server | deliveries added (40 changes a turn, $FANOUT_STREAMS streams) | instructions a delivery |"
  echo "|---|---|---|"
  awk '
    { n = $2; per[NR] = $3 / n; printf "| %s | %d | %.0f |\n", $1, n, per[NR] }
    END { if (NR == 2) printf "\ncontrol plane / route-sized limit, a delivery: %.2f×\n", per[1] / per[2] }
  ' "$WORK/fanout.txt"
fi
