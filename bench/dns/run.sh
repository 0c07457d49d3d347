#!/usr/bin/env bash
# Cluster DNS: queries per second and memory, flatnet vs knotd, same zone, same queries.
# Loopback only (127.0.0.1:15353 flatnet, 127.0.0.1:15354 knotd); kills only what it starts.
# Usage: bench/dns/run.sh [ROUNDS] [SECONDS] [CLIENTS] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${1:-3}
SECS=${2:-10}
CLIENTS=${3:-8}
THREADS=${4:-2}
FL_PORT=15353
KN_PORT=15354

command -v knotd >/dev/null || { echo "needs knotd: apt-get install -y knot" >&2; exit 1; }
command -v dnsperf >/dev/null || { echo "needs dnsperf: apt-get install -y dnsperf" >&2; exit 1; }

cargo build --release -q -p flatnet-bench-dns
BIN=target/release/flatnet-bench-dns-server

TMP=$(mktemp -d /tmp/flbench-dns.XXXXXX)
FL_PID=""
KN_PID=""
cleanup() {
  [ -n "$FL_PID" ] && kill "$FL_PID" 2>/dev/null || true
  [ -n "$KN_PID" ] && kill "$KN_PID" 2>/dev/null || true
  [ -n "$FL_PID" ] && wait "$FL_PID" 2>/dev/null || true
  [ -n "$KN_PID" ] && wait "$KN_PID" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

"$BIN" files "$TMP"

cat >"$TMP/knot.conf" <<CONF
server:
    rundir: "$TMP"
    user: root:root
    listen: 127.0.0.1@$KN_PORT
    background-workers: 1
log:
  - target: stderr
    any: warning
database:
    storage: "$TMP"
template:
  - id: default
    storage: "$TMP"
    file: "%s.zone"
    journal-content: none
    zonefile-sync: -1
    zonefile-load: whole
    semantic-checks: off
zone:
  - domain: cluster.local
CONF

"$BIN" serve "$FL_PORT" >"$TMP/flatnet.out" 2>"$TMP/flatnet.err" &
FL_PID=$!
knotd -c "$TMP/knot.conf" >"$TMP/knot.out" 2>&1 &
KN_PID=$!

# Both must answer before measuring (bounded wait).
for name in flatnet knot; do
  port=$FL_PORT; [ $name = knot ] && port=$KN_PORT
  ok=0
  for _ in $(seq 1 50); do
    if printf 'svc1.ns1.svc.cluster.local A\n' | dnsperf -s 127.0.0.1 -p "$port" -n 1 -t 1 2>/dev/null |
      grep -q 'Queries completed: *1 '; then ok=1; break; fi
    sleep 0.2
  done
  [ $ok = 1 ] || { echo "$name did not answer on $port" >&2; cat "$TMP"/*.err "$TMP"/knot.out >&2 || true; exit 1; }
done

# Same answers? Spot checks: an existing name, a headless one, a missing one.
for q in 'svc42.ns3.svc.cluster.local A' 'headless.ns7.svc.cluster.local A' 'missing1.ns0.svc.cluster.local A'; do
  for port in $FL_PORT $KN_PORT; do
    printf '%s\n' "$q" | dnsperf -s 127.0.0.1 -p "$port" -n 1 -t 1 -v 2>/dev/null |
      grep -E '^> ' | sed "s/^/[$port] /" || true
  done
done

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# Resident size with the zone loaded, before any load.
FL_IDLE=$(rss "$FL_PID")
KN_IDLE=$(rss "$KN_PID")

echo "machine: $(nproc) cores, shared by dnsperf and the server under test"
echo "dnsperf: -l $SECS -c $CLIENTS -T $THREADS, no rate limit, $ROUNDS rounds alternating"
HZ=$(getconf CLK_TCK)
# utime + stime of a process, all threads, in clock ticks.
cputicks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
: >"$TMP/results"
for r in $(seq 1 "$ROUNDS"); do
  for name in flatnet knot; do
    port=$FL_PORT; [ $name = knot ] && port=$KN_PORT
    pid=$FL_PID; [ $name = knot ] && pid=$KN_PID
    cpu0=$(cputicks "$pid")
    out=$(dnsperf -s 127.0.0.1 -p "$port" -d "$TMP/queries.txt" -l "$SECS" -c "$CLIENTS" -T "$THREADS" 2>&1)
    qps=$(awk '/Queries per second:/ {print $4}' <<<"$out")
    lat=$(awk '/Average Latency/ {print $4}' <<<"$out")
    cpu1=$(cputicks "$pid")
    # Server CPU seconds used during the run, and queries per server CPU-second.
    cpus=$(awk -v a="$cpu0" -v b="$cpu1" -v hz="$HZ" 'BEGIN {printf "%.2f", (b-a)/hz}')
    done_q=$(awk '/Queries completed:/ {print $3}' <<<"$out")
    percpu=$(awk -v q="$done_q" -v c="$cpus" 'BEGIN {printf "%.0f", q/c}')
    lost=$(awk '/Queries lost:/ {print $3}' <<<"$out")
    noerr=$(grep -o 'NOERROR [0-9]*' <<<"$out" | awk '{print $2}')
    nx=$(grep -o 'NXDOMAIN [0-9]*' <<<"$out" | awk '{print $2}')
    echo "round $r $name qps=$qps avg_latency_s=$lat lost=$lost noerror=$noerr nxdomain=$nx server_cpu_s=$cpus queries_per_server_cpu_s=$percpu"
    echo "$name $qps $lat $percpu" >>"$TMP/results"
  done
done

FL_RSS=$(rss "$FL_PID")
KN_RSS=$(rss "$KN_PID")
echo
printf '%-8s %12s %16s %22s %14s %10s\n' server qps_median avg_latency_ms queries_per_cpu_s_med rss_idle_kib rss_kib
for name in flatnet knot; do
  med_qps=$(awk -v n=$name '$1==n {print $2}' "$TMP/results" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  med_lat=$(awk -v n=$name '$1==n {print $3*1000}' "$TMP/results" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  med_cpu=$(awk -v n=$name '$1==n {print $4}' "$TMP/results" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  r=$FL_RSS; [ $name = knot ] && r=$KN_RSS
  i=$FL_IDLE; [ $name = knot ] && i=$KN_IDLE
  printf '%-8s %12.0f %16s %22s %14s %10s\n' "$name" "$med_qps" "$med_lat" "$med_cpu" "$i" "$r"
  echo "$name $med_qps" >>"$TMP/medians"
done
awk '{q[$1]=$2} END {printf "ratio flatnet/knot (QPS median): %.2f\n", q["flatnet"]/q["knot"]}' "$TMP/medians"
