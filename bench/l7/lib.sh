# Shared by bench/l7/spike.sh and bench/l7/ab.sh (sourced): a temp folder and the PIDs the
# script starts, both cleaned up on exit; the configurations of `l7bench.py gen` on ports
# from BASE (backends BASE+1..5, nginx BASE+10..13, HAProxy BASE+20..22; 10 hosts, 2 workers
# each); and a process's CPU time.

# l7_setup NAME BASE: sets TMP and PIDS, writes the configurations under $TMP.
l7_setup() {
  local b=$2
  TMP=$(mktemp -d "/tmp/flatnet-l7-$1.XXXXXX")
  PIDS=()
  trap l7_cleanup EXIT
  python3 bench/l7/l7bench.py gen "$TMP" --b1 $((b + 1)) --b2 $((b + 2)) --bnew $((b + 3)) \
    --bh2 $((b + 4)) --btls $((b + 5)) --nginx-http $((b + 10)) --nginx-h2c $((b + 11)) \
    --nginx-tls $((b + 12)) --nginx-large $((b + 13)) --haproxy-http $((b + 20)) \
    --haproxy-h2c $((b + 21)) --haproxy-tls $((b + 22)) --hosts-small 10 --hosts-large 10 \
    --proxy-workers 2 --backend-workers 2 >/dev/null
}

l7_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  rm -rf "$TMP"
}

# cpu_ticks PID: "utime stime" in clock ticks, summed over the process and its children.
cpu_ticks() {
  local u=0 s=0 p f
  for p in $1 $(pgrep -P "$1" || true); do
    read -r -a f <"/proc/$p/stat"
    u=$((u + f[13])); s=$((s + f[14]))
  done
  echo "$u $s"
}
