#!/usr/bin/env bash
# L7 Ingress proxy: flatnet's proxy (`flatnet l7`) against nginx and HAProxy (Debian's),
# configured with the same routes to the same backends, and straight to a backend (the
# limit). HTTP/1.1 with wrk, HTTP/2 with h2load; 10,000 host rules: throughput to the
# 5,000th host, route change latency, resident memory. One run, interleaved; prints a
# markdown table and writes it to $OUT.
#
# Safety: everything listens on 127.0.0.1 only, on high ports ($L7_PORT_BASE+1..+60); no
# sysctl, no change to any network configuration; the system's nginx / HAProxy services are
# not touched (our own processes with our own config files in a temp dir); every loop is
# bounded; only the PIDs started here are killed, on exit, error and Ctrl-C.
#
# Usage:   bash bench/l7/run.sh
# Env:     DURATION=10 REPS=3 CONNS=64 HOSTS_LARGE=10000 OUT=bench/l7/results.md
#          FLATNET=path/to/flatnet (default: cargo build --release -p flatnet, then
#          target/release/flatnet); FLATNET_COMMIT=abc1234 names the commit it was built
#          from in the report (default: this tree's HEAD); SKIP_FLATNET=1 measures only the others;
#          H2_MODE=auto|h2c|tls (auto: h2c prior knowledge if flatnet answers it, else TLS);
#          L7_PROXY_CPUS / L7_BACKEND_CPUS / L7_LOAD_CPUS: taskset CPU lists (default: none,
#          every process may use both cores); PROXY_WORKERS=2 (nginx worker_processes,
#          HAProxy nbthread; flatnet runs its default runtime, one worker per core);
#          L7_PORT_BASE=28100; FLIPS=6 timed route changes per proxy and size, then
#          MEM_FLIPS=24 more on flatnet at 10,000 hosts for its memory after many changes.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

DURATION=${DURATION:-10}
REPS=${REPS:-3}
CONNS=${CONNS:-64}
HOSTS_SMALL=10
HOSTS_LARGE=${HOSTS_LARGE:-10000}
OUT=${OUT:-bench/l7/results.md}
H2_MODE=${H2_MODE:-auto}
PROXY_WORKERS=${PROXY_WORKERS:-2}
BACKEND_WORKERS=${BACKEND_WORKERS:-2}
SKIP_FLATNET=${SKIP_FLATNET:-0}
BASE=${L7_PORT_BASE:-28100}
FLIPS=${FLIPS:-6}
MEM_FLIPS=${MEM_FLIPS:-24}

# The host every throughput request goes to: the middle one of each configuration.
SMALL_HOST_IDX=5
LARGE_HOST_IDX=$((HOSTS_LARGE / 2))
host_of() { printf 'host-%05d.example.com' "$1"; }
SMALL_HOST=$(host_of $SMALL_HOST_IDX)
LARGE_HOST=$(host_of $LARGE_HOST_IDX)
REQ_PATH=/api/items

# Ports (127.0.0.1 only).
B1=$((BASE + 1)); B2=$((BASE + 2)); BNEW=$((BASE + 3)); BH2=$((BASE + 4)); BTLS=$((BASE + 5))
NG_HTTP=$((BASE + 11)); NG_H2C=$((BASE + 12)); NG_TLS=$((BASE + 13))
HA_HTTP=$((BASE + 21)); HA_H2C=$((BASE + 22)); HA_TLS=$((BASE + 23))
FL_HTTP=$((BASE + 31)); FL_TLS=$((BASE + 33)); FL_ADMIN=$((BASE + 34))
NGL_HTTP=$((BASE + 41))
FLL_HTTP=$((BASE + 51)); FLL_ADMIN=$((BASE + 54))
ALL_PORTS="$B1 $B2 $BNEW $BH2 $BTLS $NG_HTTP $NG_H2C $NG_TLS $HA_HTTP $HA_H2C $HA_TLS $FL_HTTP $FL_TLS $FL_ADMIN $NGL_HTTP $FLL_HTTP $FLL_ADMIN"

# Command prefixes: taskset when a CPU list is given (taskset execs, so $! is the process).
PIN_PROXY=(); PIN_BACKEND=(); PIN_LOAD=()
[ -n "${L7_PROXY_CPUS:-}" ] && PIN_PROXY=(taskset -c "$L7_PROXY_CPUS")
[ -n "${L7_BACKEND_CPUS:-}" ] && PIN_BACKEND=(taskset -c "$L7_BACKEND_CPUS")
[ -n "${L7_LOAD_CPUS:-}" ] && PIN_LOAD=(taskset -c "$L7_LOAD_CPUS")

# --- packages ------------------------------------------------------------------------------
need=()
for pair in nginx:nginx-light haproxy:haproxy wrk:wrk h2load:nghttp2-client curl:curl \
  openssl:openssl python3:python3 taskset:util-linux ss:iproute2; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing ${need[*]}"
  # Debian's nginx / haproxy packages start their system service on install unless
  # policy-rc.d forbids it; keep them from starting (only when no policy exists yet).
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  rc=0
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends "${need[@]}" >/dev/null; } || rc=$?
  [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ $rc = 0 ] || { echo "apt-get install failed ($rc)" >&2; exit 1; }
fi

for p in $ALL_PORTS; do
  if [ -n "$(ss -Hltn "sport = :$p" 2>/dev/null)" ]; then
    echo "port $p is in use; set L7_PORT_BASE to another base" >&2
    exit 1
  fi
done

# --- flatnet binary ----------------------------------------------------------------------
HAVE_FLATNET=0
if [ "$SKIP_FLATNET" != 1 ]; then
  if [ -z "${FLATNET:-}" ]; then
    cargo build --release -q -p flatnet
    FLATNET=$ROOT/target/release/flatnet
  fi
  if "$FLATNET" l7 --help >/dev/null 2>&1; then
    HAVE_FLATNET=1
    FL_HELP=$("$FLATNET" l7 --help 2>&1)
  else
    echo "WARNING: '$FLATNET l7' does not exist; measuring the others only" >&2
  fi
fi

# --- temp dir, processes, cleanup ----------------------------------------------------------
TMP=$(mktemp -d /tmp/flbench-l7.XXXXXX)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# One self-signed certificate for *.example.com (used only in the TLS variant of HTTP/2).
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=*.example.com" \
  -addext "subjectAltName=DNS:*.example.com" -keyout "$TMP/tls.key" -out "$TMP/tls.crt" \
  >/dev/null 2>&1

python3 bench/l7/l7bench.py gen "$TMP" --b1 $B1 --b2 $B2 --bnew $BNEW --bh2 $BH2 --btls $BTLS \
  --nginx-http $NG_HTTP --nginx-h2c $NG_H2C --nginx-tls $NG_TLS --nginx-large $NGL_HTTP \
  --haproxy-http $HA_HTTP --haproxy-h2c $HA_H2C --haproxy-tls $HA_TLS \
  --hosts-small $HOSTS_SMALL --hosts-large "$HOSTS_LARGE" \
  --proxy-workers "$PROXY_WORKERS" --backend-workers "$BACKEND_WORKERS"
mkdir -p "$TMP/nginx10k/stage" "$TMP/nginx10/stage" "$TMP/runs"

for n in backend nginx10 nginx10k; do
  nginx -t -q -c "$TMP/$n/nginx.conf" -e "$TMP/$n/error.log" ||
    { echo "nginx config $n invalid" >&2; cat "$TMP/$n/error.log" >&2; exit 1; }
done
haproxy -c -q -f "$TMP/haproxy/haproxy.cfg" ||
  { echo "haproxy config invalid" >&2; exit 1; }

now_ms() { date +%s%3N; }

# wait_ok PORT HOST TRIES: bounded wait (TRIES x 0.1 s) for a 200 on HOST/api/items.
wait_ok() {
  local port=$1 host=$2 tries=$3 code
  for _ in $(seq 1 "$tries"); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -m 2 -H "Host: $host" \
      "http://127.0.0.1:$port$REQ_PATH" 2>/dev/null || true)
    [ "$code" = 200 ] && return 0
    sleep 0.1
  done
  return 1
}

"${PIN_BACKEND[@]}" nginx -c "$TMP/backend/nginx.conf" -e "$TMP/backend/error.log" &
PIDS+=($!); BACKEND_PID=$!
"${PIN_PROXY[@]}" nginx -c "$TMP/nginx10/nginx.conf" -e "$TMP/nginx10/error.log" &
PIDS+=($!); NG_PID=$!
"${PIN_PROXY[@]}" haproxy -db -f "$TMP/haproxy/haproxy.cfg" >"$TMP/haproxy/out.log" 2>&1 &
PIDS+=($!); HA_PID=$!
T0=$(now_ms)
"${PIN_PROXY[@]}" nginx -c "$TMP/nginx10k/nginx.conf" -e "$TMP/nginx10k/error.log" &
PIDS+=($!); NGL_PID=$!
wait_ok $NGL_HTTP "$LARGE_HOST" 600 || { echo "nginx 10k did not answer" >&2; exit 1; }
START_NGL_MS=$(($(now_ms) - T0))

FL_PID=""; FLL_PID=""
if [ $HAVE_FLATNET = 1 ]; then
  # Every listener explicit (the defaults are [::]:80, [::]:443 and 127.0.0.1:10254); no
  # access log, as for nginx and HAProxy.
  common=()
  grep -q -- '--access-log' <<<"$FL_HELP" && common+=(--access-log off)
  fl_args=(--manifests "$TMP/flatnet10/manifests" --http "127.0.0.1:$FL_HTTP" "${common[@]}")
  grep -q -- '--https' <<<"$FL_HELP" && fl_args+=(--https "127.0.0.1:$FL_TLS")
  grep -q -- '--admin' <<<"$FL_HELP" && fl_args+=(--admin "127.0.0.1:$FL_ADMIN")
  "${PIN_PROXY[@]}" "$FLATNET" l7 "${fl_args[@]}" >"$TMP/flatnet10/out.log" 2>&1 &
  PIDS+=($!); FL_PID=$!
  fll_args=(--manifests "$TMP/flatnet10k/manifests" --http "127.0.0.1:$FLL_HTTP" "${common[@]}")
  grep -q -- '--https' <<<"$FL_HELP" && fll_args+=(--https off)
  grep -q -- '--admin' <<<"$FL_HELP" && fll_args+=(--admin "127.0.0.1:$FLL_ADMIN")
  T0=$(now_ms)
  "${PIN_PROXY[@]}" "$FLATNET" l7 "${fll_args[@]}" >"$TMP/flatnet10k/out.log" 2>&1 &
  PIDS+=($!); FLL_PID=$!
  if ! wait_ok $FLL_HTTP "$LARGE_HOST" 600; then
    echo "flatnet (10,000 hosts) did not answer $LARGE_HOST$REQ_PATH with 200 in 60 s" >&2
    tail -20 "$TMP/flatnet10k/out.log" >&2; exit 1
  fi
  START_FLL_MS=$(($(now_ms) - T0))
fi

# Everything answers the benchmark request with the backend's "ok" (bounded waits).
check_body() { # name port host
  local body
  wait_ok "$2" "$3" 100 || { echo "$1 ($2) does not answer $3$REQ_PATH with 200" >&2; return 1; }
  body=$(curl -s -m 2 -H "Host: $3" "http://127.0.0.1:$2$REQ_PATH")
  [ "$body" = ok ] || { echo "$1: unexpected body '$body'" >&2; return 1; }
}
check_body direct $B1 "$SMALL_HOST"
check_body nginx $NG_HTTP "$SMALL_HOST"
check_body haproxy $HA_HTTP "$SMALL_HOST"
check_body nginx10k $NGL_HTTP "$LARGE_HOST"
if [ $HAVE_FLATNET = 1 ]; then
  check_body flatnet $FL_HTTP "$SMALL_HOST"
  check_body flatnet10k $FLL_HTTP "$LARGE_HOST"
fi
# ... and routes by host: an unknown host must not reach a backend.
for t in nginx:$NG_HTTP haproxy:$HA_HTTP nginx10k:$NGL_HTTP ${FL_PID:+flatnet:$FL_HTTP flatnet10k:$FLL_HTTP}; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -m 2 -H "Host: nope.example.com" \
    "http://127.0.0.1:${t#*:}$REQ_PATH" || true)
  [ "$code" != 200 ] || { echo "${t%%:*} answers 200 for an unknown host" >&2; exit 1; }
  echo "routing check: ${t%%:*} answers $code for an unknown host"
done

# --- HTTP/2 variant ------------------------------------------------------------------------
h2_ok() { # port authority scheme: 4 requests over one connection all succeed with 2xx
  local out
  out=$(timeout 10 h2load -n 4 -c 1 --connect-to="127.0.0.1:$1" "$3://$2$REQ_PATH" 2>&1) || return 1
  grep -q '4 succeeded' <<<"$out" && grep -q 'status codes: 4 2xx' <<<"$out"
}
if [ "$H2_MODE" = auto ]; then
  H2_MODE=h2c
  if [ $HAVE_FLATNET = 1 ] && ! h2_ok $FL_HTTP "$SMALL_HOST" http; then
    echo "flatnet does not answer HTTP/2 prior knowledge (h2c) on --http: HTTP/2 over TLS for all"
    H2_MODE=tls
  fi
fi
if [ "$H2_MODE" = h2c ]; then
  SCHEME=http; H2_DIRECT=$BH2; H2_NG=$NG_H2C; H2_HA=$HA_H2C; H2_FL=$FL_HTTP
else
  SCHEME=https; H2_DIRECT=$BTLS; H2_NG=$NG_TLS; H2_HA=$HA_TLS; H2_FL=$FL_TLS
fi
H2_TARGETS=(direct:$H2_DIRECT nginx:$H2_NG haproxy:$H2_HA)
if [ $HAVE_FLATNET = 1 ]; then
  if [ "$H2_MODE" = tls ] && ! grep -q -- '--https' <<<"$FL_HELP"; then
    echo "flatnet has no --https: no HTTP/2 figure for flatnet"
  else
    H2_TARGETS+=(flatnet:$H2_FL)
  fi
fi
H2_OK_TARGETS=()
for t in "${H2_TARGETS[@]}"; do
  if h2_ok "${t#*:}" "$SMALL_HOST" $SCHEME; then
    H2_OK_TARGETS+=("$t")
  else
    echo "WARNING: ${t%%:*} does not answer HTTP/2 ($H2_MODE) on ${t#*:}; left out" >&2
  fi
done

H1_TARGETS=(direct:$B1:$SMALL_HOST nginx:$NG_HTTP:$SMALL_HOST haproxy:$HA_HTTP:$SMALL_HOST
  nginx10k:$NGL_HTTP:$LARGE_HOST)
[ $HAVE_FLATNET = 1 ] && H1_TARGETS+=(flatnet:$FL_HTTP:$SMALL_HOST flatnet10k:$FLL_HTTP:$LARGE_HOST)

rss_kib() { # VmRSS of one process (flatnet, HAProxy: one process each), KiB
  awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0
}
pss_kib() { # nginx: master + workers share pages, so the sum of their Pss, KiB
  local total=0 p v
  for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
    v=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k/1024}'; }

EXTRA=$TMP/extra
: >"$EXTRA"
echo "h2mode $H2_MODE" >>"$EXTRA"
echo "flips $FLIPS" >>"$EXTRA"
echo "start_nginx10k_ms $START_NGL_MS" >>"$EXTRA"
echo "rss_nginx10k_idle $(mib "$(pss_kib $NGL_PID)")" >>"$EXTRA"
if [ $HAVE_FLATNET = 1 ]; then
  sleep 1
  echo "start_flatnet10k_ms $START_FLL_MS" >>"$EXTRA"
  echo "rss_flatnet10_idle $(mib "$(rss_kib $FL_PID)")" >>"$EXTRA"
  echo "rss_flatnet10k_idle $(mib "$(rss_kib $FLL_PID)")" >>"$EXTRA"
fi

# --- throughput: round robin over the targets, REPS times --------------------------------
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
START_UTC=$(date -u +%H:%M)
RESULTS=$TMP/results
: >"$RESULTS"

# CPU time (utime + stime, clock ticks) of the process serving a target: the proxy (nginx:
# master + workers), or for "direct" the backend nginx. Requests per CPU-second of it is
# the efficiency figure, less sensitive than req/s to what else the 2 cores are doing.
HZ=$(getconf CLK_TCK)
pid_of() {
  case $1 in
    direct) echo "$BACKEND_PID" ;; nginx) echo "$NG_PID" ;; haproxy) echo "$HA_PID" ;;
    nginx10k) echo "$NGL_PID" ;; flatnet) echo "$FL_PID" ;; flatnet10k) echo "$FLL_PID" ;;
  esac
}
cputicks() {
  local total=0 p v
  for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
    v=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
cpu_secs() { awk -v a="$1" -v b="$2" -v hz="$HZ" 'BEGIN {printf "%.2f", (b - a) / hz}'; }

run_wrk() { # name port host rep (rep 0 = warm-up, 2 s, not recorded)
  local f="$TMP/runs/h1-$1-$4" d=$DURATION pid c0 c1
  [ "$4" = 0 ] && d=2
  pid=$(pid_of "$1"); c0=$(cputicks "$pid")
  timeout $((d + 30)) "${PIN_LOAD[@]}" wrk -c"$CONNS" -t2 -d"${d}s" --latency \
    -H "Host: $3" "http://127.0.0.1:$2$REQ_PATH" >"$f" 2>&1 || true
  c1=$(cputicks "$pid")
  [ "$4" = 0 ] && return 0
  local r
  r=$(python3 bench/l7/l7bench.py wrk "$f")
  echo "h1 $1 $4 $r $(cpu_secs "$c0" "$c1") $d" >>"$RESULTS"
  echo "  h1 $1 rep $4: req/s p50 p99 errors = $r, server CPU $(cpu_secs "$c0" "$c1") s"
}
run_h2() { # name port rep
  local f="$TMP/runs/h2-$1-$3" d=$DURATION pid c0 c1
  [ "$3" = 0 ] && d=2
  rm -f "$f.log"
  pid=$(pid_of "$1"); c0=$(cputicks "$pid")
  timeout $((d + 30)) "${PIN_LOAD[@]}" h2load -c"$CONNS" -m10 -t2 -D"$d" \
    --log-file="$f.log" --connect-to="127.0.0.1:$2" "$SCHEME://$SMALL_HOST$REQ_PATH" \
    >"$f" 2>&1 || true
  c1=$(cputicks "$pid")
  [ "$3" = 0 ] && { rm -f "$f.log"; return 0; }
  local r
  r=$(python3 bench/l7/l7bench.py h2 "$f" "$f.log")
  rm -f "$f.log"
  echo "h2 $1 $3 $r $(cpu_secs "$c0" "$c1") $d" >>"$RESULTS"
  echo "  h2 $1 rep $3: req/s p50 p99 errors = $r, server CPU $(cpu_secs "$c0" "$c1") s"
}

echo "load average before: $LOAD0"
echo "warm-up (2 s each)"
for t in "${H1_TARGETS[@]}"; do IFS=: read -r n p h <<<"$t"; run_wrk "$n" "$p" "$h" 0; done
for t in "${H2_OK_TARGETS[@]}"; do run_h2 "${t%%:*}" "${t#*:}" 0; done

for rep in $(seq 1 "$REPS"); do
  echo "round $rep of $REPS"
  # A new order each round (a seeded shuffle, printed), so that no target always runs
  # right after the same one (a fixed rotation keeps the same predecessors).
  n1=${#H1_TARGETS[@]}
  for i in $(python3 -c "import random; r = random.Random($rep); l = list(range($n1)); r.shuffle(l); print(*l)"); do
    IFS=: read -r n p h <<<"${H1_TARGETS[$i]}"
    run_wrk "$n" "$p" "$h" "$rep"
  done
  n2=${#H2_OK_TARGETS[@]}
  for i in $(python3 -c "import random; r = random.Random(100 + $rep); l = list(range($n2)); r.shuffle(l); print(*l)"); do
    t=${H2_OK_TARGETS[$i]}
    run_h2 "${t%%:*}" "${t#*:}" "$rep"
  done
done
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

if [ $HAVE_FLATNET = 1 ]; then
  echo "rss_flatnet10_after $(mib "$(rss_kib $FL_PID)")" >>"$EXTRA"
  echo "rss_flatnet10k_after $(mib "$(rss_kib $FLL_PID)")" >>"$EXTRA"
fi
echo "rss_nginx10_after $(mib "$(pss_kib $NG_PID)")" >>"$EXTRA"
echo "rss_nginx10k_after $(mib "$(pss_kib $NGL_PID)")" >>"$EXTRA"
echo "rss_haproxy_after $(mib "$(rss_kib $HA_PID)")" >>"$EXTRA"

# --- route changes -------------------------------------------------------------------------
reroute() { # key args...
  local key=$1; shift
  local log="$TMP/runs/$key"
  timeout 300 python3 bench/l7/l7bench.py reroute --flips "$FLIPS" "$@" | tee "$log" || true
  echo "$key $(sed -n 's/.* ms=\([^ ]*\).*/\1/p' "$log" | tr '\n' ' ')" >>"$EXTRA"
}
echo "route changes ($FLIPS flips each)"
if [ $HAVE_FLATNET = 1 ]; then
  reroute reroute_flatnet10k --kind flatnet --conf "$TMP/flatnet10k/manifests" \
    --stage "$TMP/flatnet10k/stage" --nhosts "$HOSTS_LARGE" --host $LARGE_HOST_IDX --port $FLL_HTTP
fi
reroute reroute_nginx10k --kind nginx --conf "$TMP/nginx10k/servers" --stage "$TMP/nginx10k/stage" \
  --nhosts "$HOSTS_LARGE" --host $LARGE_HOST_IDX --port $NGL_HTTP --nginx-port $NGL_HTTP \
  --nginx-conf "$TMP/nginx10k/nginx.conf" --pause 3
if [ $HAVE_FLATNET = 1 ]; then
  reroute reroute_flatnet10 --kind flatnet --conf "$TMP/flatnet10/manifests" \
    --stage "$TMP/flatnet10/stage" --nhosts $HOSTS_SMALL --host $SMALL_HOST_IDX --port $FL_HTTP \
    --tls-secret bench-tls
  echo "rss_flatnet10k_end $(mib "$(rss_kib $FLL_PID)")" >>"$EXTRA"
  # Memory after many route changes at 10,000 hosts (each one rebuilds the table).
  if [ "$MEM_FLIPS" -gt 0 ]; then
    echo "memory: $MEM_FLIPS more route changes at $HOSTS_LARGE hosts"
    timeout 600 python3 bench/l7/l7bench.py reroute --kind flatnet --flips "$MEM_FLIPS" --pause 0.3 \
      --conf "$TMP/flatnet10k/manifests" --stage "$TMP/flatnet10k/stage" --nhosts "$HOSTS_LARGE" \
      --host $LARGE_HOST_IDX --port $FLL_HTTP >"$TMP/runs/memflips" || true
    echo "rss_flatnet10k_soak $(mib "$(rss_kib $FLL_PID)")" >>"$EXTRA"
    echo "mem_flips $((FLIPS + MEM_FLIPS))" >>"$EXTRA"
  fi
fi
reroute reroute_nginx10 --kind nginx --conf "$TMP/nginx10/servers" --stage "$TMP/nginx10/stage" \
  --nhosts $HOSTS_SMALL --host $SMALL_HOST_IDX --port $NG_HTTP --nginx-port $NG_HTTP \
  --nginx-h2c $NG_H2C --nginx-tls $NG_TLS --tmp "$TMP" --nginx-conf "$TMP/nginx10/nginx.conf"

# --- report ----------------------------------------------------------------------------------
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git status --porcelain 2>/dev/null | grep -v '^??' | head -1 || true)
if [ -n "${FLATNET_COMMIT:-}" ]; then COMMIT=$FLATNET_COMMIT; DIRTY=""; fi
{
  echo "## L7 proxy benchmark, $(date -u +%Y-%m-%d) $START_UTC-$(date -u +%H:%M) UTC"
  echo
  echo "- commit: \`$COMMIT\`${DIRTY:+ (working tree had uncommitted changes)}; flatnet binary: ${FLATNET:-none}$([ $HAVE_FLATNET = 1 ] || echo ' (no `flatnet l7`: not measured)')"
  echo "- machine: $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r); load average before $LOAD0, after the throughput runs $LOAD1"
  echo "- $(nginx -v 2>&1 | sed 's/^nginx version: //'), HAProxy $(haproxy -v 2>&1 | awk 'NR==1 {print $3}'), wrk $(wrk -v 2>&1 | awk 'NR==1 {print $2}'), h2load $(h2load --version | awk '{print $2}')"
  echo "- $REPS rounds x $DURATION s per target, round robin (a new shuffled order each round), after a 2 s warm-up each; medians of the rounds; $CONNS connections, keep-alive; request GET $REQ_PATH with Host $SMALL_HOST (10 hosts) or $LARGE_HOST (10,000 hosts)"
  echo "- workers: nginx worker_processes $PROXY_WORKERS, HAProxy nbthread $PROXY_WORKERS, flatnet its default runtime (one worker thread per core), access log off for all three; backend nginx worker_processes $BACKEND_WORKERS; CPU pinning: proxies ${L7_PROXY_CPUS:-none}, backend ${L7_BACKEND_CPUS:-none}, load generator ${L7_LOAD_CPUS:-none}"
  echo
  python3 bench/l7/l7bench.py report "$RESULTS" --extra "$EXTRA"
} >"$TMP/report.md"
mkdir -p "$(dirname "$OUT")"
cp "$TMP/report.md" "$OUT"
cat "$OUT"
echo "(written to $OUT)"
