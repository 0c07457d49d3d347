#!/usr/bin/env bash
# A/B of two flatnet binaries as L7 proxies, side by side with nginx and the backend itself,
# in front of the same nginx backend: req/s and the server's CPU time per request (user +
# system, from /proc/PID/stat of the server and its child processes), ROUNDS rounds
# alternating (A and B swap places every other round), medians and the lowest and highest
# round. For changes whose effect is smaller than the run-to-run spread of bench/l7/run.sh:
# CPU per request is the steadier measure. Here, one binary as both A and B came out 1 % and
# 0.5 us per request apart over 10 rounds (its rounds spanning 50-60k req/s), and two builds
# whose CPU per request was the same came out 7 % apart in req/s.
#
# Safety: everything listens on 127.0.0.1 (ports 31001-31041); no sysctl or network change;
# only the PIDs started here are killed, on exit and on error.
#
# Usage: A=path/to/flatnet B=path/to/other/flatnet bash bench/l7/ab.sh
#        Env: PROTO=h2 (h2load -c64 -m10, h2c) or h1 (wrk -c64); ROUNDS=5 D=5 (seconds per run);
#        A_ENV / B_ENV: environment assignments for A's / B's process (e.g. B_ENV="X=1")
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${A:?A=path of the first flatnet binary}" "${B:?B=path of the second flatnet binary}"
PROTO=${PROTO:-h2}
ROUNDS=${ROUNDS:-5}
D=${D:-5}
source bench/l7/lib.sh
l7_setup ab 31000
declare -A PID_OF NAME_OF
nginx -c "$TMP/backend/nginx.conf" -e "$TMP/backend/error.log" & PIDS+=($!)
BACKEND=$!
nginx -c "$TMP/nginx10/nginx.conf" -e "$TMP/nginx10/error.log" & PIDS+=($!)
if [ "$PROTO" = h2 ]; then PORTS=(31011 31030 31031 31004); else PORTS=(31010 31030 31031 31001); fi
PID_OF[${PORTS[0]}]=$!; NAME_OF[${PORTS[0]}]=nginx
PID_OF[${PORTS[3]}]=$BACKEND; NAME_OF[${PORTS[3]}]="direct (the backend)"
serve() { # port binary env
  env ${3:-} "$2" l7 -f "$TMP/flatnet10/manifests" --http "127.0.0.1:$1" --https off --admin off \
    --access-log off & PIDS+=($!)
  PID_OF[$1]=$!
}
serve 31030 "$A" "${A_ENV:-}"; NAME_OF[31030]="A $A ${A_ENV:-}"
serve 31031 "$B" "${B_ENV:-}"; NAME_OF[31031]="B $B ${B_ENV:-}"
H="host-00005.example.com"
for p in "${PORTS[@]}"; do
  ok=0
  for _ in $(seq 50); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $H" "http://127.0.0.1:$p/api/items" || true)
    if [ "$p" = 31011 ] || [ "$p" = 31004 ] || [ "$code" = 200 ]; then ok=1; break; fi
    sleep 0.1
  done
  [ $ok = 1 ] || { echo "nothing answers 200 on $p" >&2; exit 1; }
done
sleep 1
HZ=$(getconf CLK_TCK)
ticks() { # utime + stime
  local u s
  read -r u s <<<"$(cpu_ticks "$1")"
  echo $((u + s))
}
: >"$TMP/results"
for ((r = 1; r <= ROUNDS; r++)); do
  # A and B swap places every other round: with a fixed order, the second of the two
  # measured 5-8 % more CPU per request here (seen by swapping the binaries).
  order=("${PORTS[@]}")
  if ((r % 2 == 0)); then order=("${PORTS[0]}" "${PORTS[2]}" "${PORTS[1]}" "${PORTS[3]}"); fi
  for p in "${order[@]}"; do
    c0=$(ticks "${PID_OF[$p]}")
    if [ "$PROTO" = h2 ]; then
      line=$(h2load -c64 -m10 -t2 -D"$D" --connect-to="127.0.0.1:$p" "http://$H/api/items" 2>&1 |
        awk '/finished in/ {r=$4} /requests:/ {n=$8} END {print r, n}')
    else
      line=$(wrk -c64 -t2 -d"${D}s" -H "Host: $H" "http://127.0.0.1:$p/api/items" |
        awk '/requests in/ {n=$1} /Requests\/sec/ {r=$2} END {print r, n}')
    fi
    c1=$(ticks "${PID_OF[$p]}")
    read -r rps n <<<"$line"
    us=$(awk -v c=$((c1 - c0)) -v n="$n" -v hz="$HZ" 'BEGIN {printf "%.1f", c / hz / n * 1e6}')
    echo "$r $p $rps $us" | tee -a "$TMP/results"
  done
done
# med PORT COLUMN: the median of the rounds; spread PORT COLUMN: their lowest and highest.
med() { awk -v p="$1" -v c="$2" '$2==p {print $c}' "$TMP/results" | sort -g |
  awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
spread() { awk -v p="$1" -v c="$2" '$2==p {print $c}' "$TMP/results" | sort -g |
  awk 'NR==1 {lo=$1} {hi=$1} END {print lo "-" hi}'; }
echo
echo "$PROTO, medians of $ROUNDS rounds x $D s (lowest-highest round): req/s, server CPU us per request"
for p in "${PORTS[@]}"; do
  echo "$(med "$p" 3) req/s ($(spread "$p" 3))  $(med "$p" 4) us/req ($(spread "$p" 4))  ${NAME_OF[$p]}"
done
