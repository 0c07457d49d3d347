#!/usr/bin/env bash
# Diagnostic for bench/throughput.sh: what one sysctl inside some of a lab cluster's namespaces
# costs on the vxlan cross-node path. Brings up lab cluster bench-ab (2 nodes, vxlan, pod s1
# on node1 and c2 on node2), then alternates iperf3 runs (c2 -> s1, 1 stream, 5 s) with the
# sysctl at A and at B, RUNS rounds, the order flipping every round.
# Run as root:  bench/lab-sysctl-ab.sh
#   NS=fabric                                namespaces: bench-ab.$n for each n of NS
#                                            (e.g. NS="node.node1 node.node2")
#   KEY=net.bridge.bridge-nf-call-iptables   the sysctl
#   A=1 B=0 RUNS=7
# The cluster (state in /tmp/flbench-state) and the iperf3 server (by PID) are removed on exit.
set -euo pipefail
[[ $(id -u) == 0 ]] || { echo "run as root" >&2; exit 1; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FLATNET=${FLATNET:-$ROOT/target/release/flatnet}
export FLATNET_STATE_DIR=/tmp/flbench-state
NS=${NS:-fabric} KEY=${KEY:-net.bridge.bridge-nf-call-iptables} A=${A:-1} B=${B:-0} RUNS=${RUNS:-7}
C=bench-ab WORK=$(mktemp -d /tmp/flbench-ab.XXXXXX)
cleanup() {
  set +e
  if [[ -s $WORK/pid ]]; then
    pid=$(cat "$WORK/pid")
    [[ $(cat /proc/$pid/comm 2>/dev/null) == iperf3 ]] && kill "$pid"
    for _ in $(seq 50); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
  fi
  "$FLATNET" down --cluster $C >/dev/null 2>&1; rm -rf "$WORK"; rmdir "$FLATNET_STATE_DIR" 2>/dev/null
}
trap cleanup EXIT
trap "exit 130" INT
trap "exit 143" TERM
cat >"$WORK/c.yaml" <<'YAML'
apiVersion: flatnet.dev/v1alpha1
kind: Cluster
metadata: {name: bench-ab}
spec: {nodes: 2, backend: vxlan}
---
apiVersion: v1
kind: Pod
metadata: {name: s1, namespace: default}
spec: {nodeName: node1, containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: c2, namespace: default}
spec: {nodeName: node2, containers: [{name: c, ports: [{containerPort: 80}]}]}
YAML
timeout 120 "$FLATNET" up -f "$WORK/c.yaml" --cluster $C >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; exit 1; }
ip=$("$FLATNET" get pods -n default --cluster $C -o json |
  python3 -c 'import json,sys; print([p["status"]["podIP"] for p in json.load(sys.stdin)["items"] if p["metadata"]["name"] == "s1"][0])')
"$FLATNET" exec --cluster $C default/s1 -- iperf3 -s -D -I "$WORK/pid" >/dev/null
for _ in $(seq 50); do [[ -s $WORK/pid ]] && break; sleep 0.1; done
set_to() { for n in $NS; do ip netns exec "$C.$n" sysctl -qw "$KEY=$1"; done; }
run() {
  "$FLATNET" exec --cluster $C default/c2 -- timeout 30 iperf3 -c "$ip" -t 5 -O 1 -J |
    python3 -c 'import json,sys; print("%.0f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))'
}
was=$(for n in $NS; do ip netns exec "$C.$n" sysctl -n "$KEY"; done | sort -u | paste -sd/)
a=() b=()
for ((r = 1; r <= RUNS; r++)); do
  if ((r % 2)); then set_to "$A"; a+=($(run)); set_to "$B"; b+=($(run))
  else set_to "$B"; b+=($(run)); set_to "$A"; a+=($(run)); fi
done
med() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo "$KEY in $C.{${NS// /,}} (flatnet sets $was); vxlan cross node, 1 stream, Mbit/s"
echo
echo "| value | runs | median |"
echo "|---|---|---|"
echo "| $A | ${a[*]} | $(med "${a[@]}") |"
echo "| $B | ${b[*]} | $(med "${b[@]}") |"
echo
echo "ratio $B / $A: $(awk -v x="$(med "${b[@]}")" -v y="$(med "${a[@]}")" 'BEGIN { printf "%.3f", x / y }')"
