#!/usr/bin/env bash
# Signpost's benchmark suite against etcd. See BENCHMARKS.md ("How to run").
#
#   bench/run.sh           full suite (about 10-15 minutes on 2 cores), rewrites BENCHMARKS.md
#   bench/run.sh --quick   every scenario briefly: proves the suite works (CI); no speed assertions
#
# Environment: BENCH_WORK_DIR (scratch, default target/bench-work), BENCH_OUT (default
# BENCHMARKS.md at the repository root; --quick defaults to $BENCH_WORK_DIR/BENCHMARKS.quick.md).
set -uo pipefail

QUICK=""
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK="--quick" ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WORK="${BENCH_WORK_DIR:-$ROOT/target/bench-work}"
if [ -n "$QUICK" ]; then
  OUT="${BENCH_OUT:-$WORK/BENCHMARKS.quick.md}"
else
  OUT="${BENCH_OUT:-$ROOT/BENCHMARKS.md}"
fi
log() { echo "[run.sh] $*" >&2; }

# --- what the suite needs -------------------------------------------------------------
apt_updated=""
apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "cannot install $* (not root or no apt-get)"; return 1
  fi
  if [ -z "$apt_updated" ]; then apt-get update -qq >&2 || true; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}
command -v etcd >/dev/null || apt_install etcd-server || { log "etcd is needed"; exit 1; }
# wrk drives the edge's HTTP load; without it the built-in generator does.
command -v wrk >/dev/null || apt_install wrk || log "wrk not installed: using the built-in HTTP load generator"

# Each binary on its own, as `cargo build --release -p signpost` builds it for a user: one
# build of several packages unifies their dependencies' features, and the servers measured
# would carry the benchmark's (axum's defaults, tracing's `log`) (bench/FINDINGS.md, round 25).
log "building release binaries"
for package in signpost-bench signpost-edge signpost; do
  cargo build --release -p "$package" >&2 || { log "build of $package failed"; exit 1; }
done
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
BIN="${TARGET_DIR:-$ROOT/target}/release"
BENCH="$BIN/signpost-bench"

rm -rf "$WORK"
mkdir -p "$WORK"
RESULTS="$WORK/results.jsonl"
: > "$RESULTS"

# --- etcd: one member on loopback, fresh data directory on the same disk --------------
CLIENT_PORT="$("$BENCH" free-port)"
PEER_PORT="$("$BENCH" free-port)"
while [ "$PEER_PORT" = "$CLIENT_PORT" ]; do PEER_PORT="$("$BENCH" free-port)"; done
ETCD_URL="http://127.0.0.1:$CLIENT_PORT"
ETCD_VERSION="$(etcd --version 2>/dev/null | sed -n 's/^etcd Version: //p')"
mkdir -p "$WORK/etcd"
etcd --name bench --data-dir "$WORK/etcd" \
  --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
  --listen-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-cluster "bench=http://127.0.0.1:$PEER_PORT" \
  --quota-backend-bytes 8589934592 --log-level error \
  > "$WORK/etcd.log" 2>&1 &
ETCD_PID=$!
cleanup() {
  if kill -0 "$ETCD_PID" 2>/dev/null; then
    kill "$ETCD_PID" 2>/dev/null
    wait "$ETCD_PID" 2>/dev/null
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for _ in $(seq 1 200); do
  (echo > "/dev/tcp/127.0.0.1/$CLIENT_PORT") 2>/dev/null && break
  kill -0 "$ETCD_PID" 2>/dev/null || { log "etcd exited:"; cat "$WORK/etcd.log" >&2; exit 1; }
  sleep 0.1
done
log "etcd $ETCD_VERSION listening on $ETCD_URL (pid $ETCD_PID)"

# --- scenarios ------------------------------------------------------------------------
COMMON=(--work-dir "$WORK" --etcd "$ETCD_URL" --etcd-pid "$ETCD_PID" $QUICK)
failed=()
run() {
  local name="$1"; shift
  local started=$SECONDS
  log "== $name"
  if ! "$BENCH" "$name" "${COMMON[@]}" "$@" | tee -a "$RESULTS"; then
    failed+=("$name")
    log "!! $name failed"
  fi
  log "== $name took $((SECONDS - started)) s"
  # Data directories are large; each run starts fresh ones.
  rm -rf "${WORK:?}/$name"
}
run writes
run routing
run history

cleanup
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
# The report being rewritten is not a change to what was measured.
if [ -n "$(git status --porcelain --untracked-files=no -- . ":(exclude)BENCHMARKS.md" 2>/dev/null)" ]; then COMMIT="$COMMIT (with uncommitted changes)"; fi
"$BENCH" report --results "$RESULTS" --out "$OUT" --commit "$COMMIT" --etcd-version "${ETCD_VERSION:-unknown}" $QUICK \
  || { log "report failed"; exit 1; }
log "wrote $OUT"
if [ ${#failed[@]} -gt 0 ]; then
  log "failed scenarios: ${failed[*]}"
  exit 1
fi
