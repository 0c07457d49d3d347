#!/usr/bin/env bash
# How fast can an HTTP/1.1 proxy be here? flatnet's proxy, nginx (Debian's) and the leanest
# tokio proxy (bench/l7/spike: no routing, no limits; multi-threaded runtime, and one
# single-threaded runtime per core) in front of the same nginx backend, and wrk straight to
# that backend; wrk 64 connections keep-alive, ROUNDS rounds alternating. Per target and
# round it prints: req/s, p99, the proxy's CPU time per request (user, system: utime/stime
# from /proc/PID/stat of the proxy and its children, i.e. nginx's workers), the whole
# machine's CPU time per request (user; kernel = system + softirq + irq; idle; from
# /proc/stat) and loopback packets per request (/proc/net/dev, read only); then the medians
# and a last line setting flatnet against the per-core spike: its rate, and how much more time
# per request the proxy spends in user space and in the kernel, and the whole machine in the
# kernel (the other processes too: their context switches and wake-ups).
#
# Safety: everything listens on 127.0.0.1 (ports 31501-31541, below the ephemeral range); no
# sysctl or network change; /proc is only read; only the PIDs started here are killed, on
# exit and on error.
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
declare -A PID_OF NAME_OF
PID_OF[31501]=$!; NAME_OF[31501]="direct (the backend)"
nginx -c "$TMP/nginx10/nginx.conf" -e "$TMP/nginx10/error.log" & PIDS+=($!)
PID_OF[31510]=$!; NAME_OF[31510]=nginx
target/release/flatnet l7 -f "$TMP/flatnet10/manifests" --http 127.0.0.1:31530 --https off \
  --admin off --access-log off & PIDS+=($!)
PID_OF[31530]=$!; NAME_OF[31530]="flatnet l7"
"$SPIKE" 127.0.0.1:31540 127.0.0.1:31501 & PIDS+=($!)
PID_OF[31540]=$!; NAME_OF[31540]="spike (multi-threaded)"
"$SPIKE" 127.0.0.1:31541 127.0.0.1:31501 per-core & PIDS+=($!)
PID_OF[31541]=$!; NAME_OF[31541]="spike (per core)"
TARGETS=(31510 31530 31540 31541 31501)
HZ=$(getconf CLK_TCK)
CORES=$(nproc)
H="Host: host-00005.example.com"
for p in "${TARGETS[@]}"; do
  ok=0
  for _ in $(seq 50); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' -H "$H" "http://127.0.0.1:$p/api/items")" = 200 ]; then ok=1; break; fi
    sleep 0.1
  done
  [ $ok = 1 ] || { echo "nothing answers 200 on $p" >&2; exit 1; }
done
# machine: "user kernel idle" in ticks over all cores (kernel = system + irq + softirq).
machine() { awk '/^cpu / {print $2 + $3, $4 + $7 + $8, $5 + $6}' /proc/stat; }
lo_packets() { awk '/^ *lo:/ {print $3}' /proc/net/dev; }
# per TICKS: TICKS clock ticks in microseconds per request of the run at hand ($n requests).
per() { awk -v t="$1" -v n="$n" -v hz="$HZ" 'BEGIN {printf "%.2f", t / hz / n * 1e6}'; }
: >"$TMP/results"
echo "port req/s p99 proxy-user-us proxy-sys-us machine-user-us machine-kernel-us machine-idle-us lo-packets"
for ((r = 1; r <= ROUNDS; r++)); do
  for p in "${TARGETS[@]}"; do
    read -r u0 s0 <<<"$(cpu_ticks "${PID_OF[$p]}")"
    read -r mu0 mk0 mi0 <<<"$(machine)"
    l0=$(lo_packets)
    line=$(wrk -c64 -t2 -d"${D}s" --latency -H "$H" "http://127.0.0.1:$p/api/items" |
      awk '/requests in/ {n=$1} /Requests\/sec/ {rps=$2} /99%/ {p99=$2} END {print rps, p99, n}')
    l1=$(lo_packets)
    read -r mu1 mk1 mi1 <<<"$(machine)"
    read -r u1 s1 <<<"$(cpu_ticks "${PID_OF[$p]}")"
    read -r rps p99 n <<<"$line"
    echo "$p $rps $p99 $(per $((u1 - u0))) $(per $((s1 - s0))) $(per $((mu1 - mu0))) \
$(per $((mk1 - mk0))) $(per $((mi1 - mi0))) $(awk -v d=$((l1 - l0)) -v n="$n" 'BEGIN {printf "%.2f", d / n}')" |
      tee -a "$TMP/results"
  done
done
med() { awk -v p="$1" -v c="$2" '$1==p {print $c}' "$TMP/results" | sort -g |
  awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "medians of $ROUNDS rounds x $D s (CPU in us per request; machine: all $CORES cores, kernel = system + irq + softirq)"
for p in "${TARGETS[@]}"; do
  echo "$(med "$p" 2) req/s  proxy user $(med "$p" 4) sys $(med "$p" 5)  machine user $(med "$p" 6) kernel $(med "$p" 7) idle $(med "$p" 8)  lo packets $(med "$p" 9)  ${NAME_OF[$p]}"
done
# flatnet against the per-core spike, per request: the proxy's own user and system time, and
# the machine's kernel time (all processes).
gap() { awk -v a="$(med 31530 "$1")" -v b="$(med 31541 "$1")" 'BEGIN {printf "%+.2f", a - b}'; }
echo
echo "flatnet vs the per-core spike: $(awk -v a="$(med 31530 2)" -v b="$(med 31541 2)" \
  'BEGIN {printf "%.2f", a / b}')x its rate; per request: proxy user $(gap 4) us, proxy system" \
  "$(gap 5) us, machine kernel $(gap 7) us"
