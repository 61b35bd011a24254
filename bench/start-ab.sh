#!/usr/bin/env bash
# Side-by-side start-up of two `signpost` builds on the same data: how FINDINGS.md's
# "first start" / "restart" figures were measured.
#
#   bench/start-ab.sh BIN_A BIN_B DATA_DIR [ROUNDS]
#
# DATA_DIR is a populated data directory, e.g. from
#   target/release/signpost-bench populate --data-dir /tmp/pop --organizations 100000 --extra-events 0
# Each round, for A then B: copies DATA_DIR to a scratch directory and starts the binary
# there (a first start: every projection built from the log), then starts it again on
# what that start left (a restart). Prints the time to "listening", then RSS and peak RSS
# (VmHWM) read FIRST_WAIT / RESTART_WAIT seconds later (default 20 / 10), and the CPU the
# server had used when it was listening (all threads). With both waits 0 it times starts
# alone (FINDINGS.md's `onefold.sh` rows). Alternate the builds and compare them within one
# run: this machine's speed moves between runs, by a third from one half hour to the next.
set -euo pipefail

if [ $# -lt 3 ]; then
  sed -n '2,13p' "$0"
  exit 2
fi
A="$1"; B="$2"; SOURCE="$3"; ROUNDS="${4:-2}"
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/signpost-start-ab.XXXXXX")"
trap 'rm -rf "$SCRATCH"' EXIT

# start BIN DIR WAIT: prints "listening <s>  cpu <s>  rss <MiB>  peak <MiB>"
start() {
  local bin="$1" dir="$2" wait="$3" log="$SCRATCH/server.log" begin pid
  begin="$(date +%s%N)"
  SIGNPOST_LOG=warn "$bin" serve --listen 127.0.0.1:0 --data-dir "$dir" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 1200); do
    grep -q listening "$log" && break
    kill -0 "$pid" 2>/dev/null || { echo "server exited:" >&2; cat "$log" >&2; exit 1; }
    sleep 0.05
  done
  local ms ticks
  ms=$((($(date +%s%N) - begin) / 1000000))
  # utime + stime, in clock ticks (fields 14 and 15; the name in field 2 has no spaces).
  ticks="$(awk '{print $14 + $15}' "/proc/$pid/stat")"
  sleep "$wait"
  local rss hwm
  rss="$(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$pid/status")"
  hwm="$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$pid/status")"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  printf 'listening %3d.%03d s  cpu %6.2f s  rss %5s MiB  peak %5s MiB\n' $((ms / 1000)) $((ms % 1000)) \
    "$(echo "$ticks $(getconf CLK_TCK)" | awk '{print $1 / $2}')" "$rss" "$hwm"
}

for round in $(seq 1 "$ROUNDS"); do
  for bin in "$A" "$B"; do
    dir="$SCRATCH/data"
    rm -rf "$dir"
    cp -r "$SOURCE" "$dir"
    echo "round $round $(basename "$bin") first start: $(start "$bin" "$dir" "${FIRST_WAIT:-20}")"
    echo "round $round $(basename "$bin") restart:     $(start "$bin" "$dir" "${RESTART_WAIT:-10}")"
  done
done
