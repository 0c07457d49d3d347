#!/usr/bin/env bash
# How fast can an HTTP/1.1 proxy on tokio be here? flatnet's proxy, nginx (Debian's) and the
# leanest tokio proxy (bench/l7/spike: no routing, no limits; multi-threaded runtime, and one
# single-threaded runtime per core) in front of the same nginx backend, wrk 64 connections
# keep-alive, ROUNDS rounds alternating. Prints "port req/s p99 user-us system-us" lines (the
# proxy's CPU time per request, from /proc/PID/stat of the proxy and its child processes,
# i.e. nginx's workers) and the medians.
#
# Safety: everything listens on 127.0.0.1 (ports 31501-31541, below the ephemeral range); no
# sysctl or network change;
# only the PIDs started here are killed, on exit and on error.
#
# Usage: bash bench/l7/spike.sh       Env: ROUNDS=3 D=8 (seconds per wrk run)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
D=${D:-8}
cargo build --release -p flatnet --quiet
cargo build --release --quiet --manifest-path bench/l7/spike/Cargo.toml --target-dir target/spike
SPIKE=target/spike/release/flatnet-l7-spike
source bench/l7/lib.sh
l7_setup spike 31500
nginx -c "$TMP/backend/nginx.conf" -e "$TMP/backend/error.log" & PIDS+=($!)
declare -A PID_OF
nginx -c "$TMP/nginx10/nginx.conf" -e "$TMP/nginx10/error.log" & PIDS+=($!); PID_OF[31510]=$!
target/release/flatnet l7 -f "$TMP/flatnet10/manifests" --http 127.0.0.1:31530 --https off \
  --admin off --access-log off & PIDS+=($!); PID_OF[31530]=$!
"$SPIKE" 127.0.0.1:31540 127.0.0.1:31501 & PIDS+=($!); PID_OF[31540]=$!
"$SPIKE" 127.0.0.1:31541 127.0.0.1:31501 per-core & PIDS+=($!); PID_OF[31541]=$!
HZ=$(getconf CLK_TCK)
H="Host: host-00005.example.com"
for p in 31510 31530 31540 31541; do
  ok=0
  for _ in $(seq 50); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' -H "$H" "http://127.0.0.1:$p/api/items")" = 200 ]; then ok=1; break; fi
    sleep 0.1
  done
  [ $ok = 1 ] || { echo "nothing answers 200 on $p" >&2; exit 1; }
done
: >"$TMP/results"
for ((r = 1; r <= ROUNDS; r++)); do
  for p in 31510 31530 31540 31541; do
    read -r u0 s0 <<<"$(cpu_ticks "${PID_OF[$p]}")"
    line=$(wrk -c64 -t2 -d"${D}s" --latency -H "$H" "http://127.0.0.1:$p/api/items" |
      awk '/requests in/ {n=$1} /Requests\/sec/ {rps=$2} /99%/ {p99=$2} END {print rps, p99, n}')
    read -r u1 s1 <<<"$(cpu_ticks "${PID_OF[$p]}")"
    read -r rps p99 n <<<"$line"
    cpu=$(awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v n="$n" -v hz="$HZ" \
      'BEGIN {printf "%.2f %.2f", u / hz / n * 1e6, s / hz / n * 1e6}')
    echo "$p $rps $p99 $cpu" | tee -a "$TMP/results"
  done
done
echo
echo "medians: 31510 nginx, 31530 flatnet l7, 31540 spike (multi-threaded), 31541 spike (per core)"
for p in 31510 31530 31540 31541; do
  med() { awk -v p=$p -v c="$1" '$1==p {print $c}' "$TMP/results" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
  echo "$p $(med 2) req/s, CPU per request: user $(med 4) us, system $(med 5) us"
done
