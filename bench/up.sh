#!/usr/bin/env bash
# Wall time of `flatnet up` (3 nodes x 30 pods), `flatnet check` on it and `flatnet down`.
#
# Run as root from anywhere:   bench/up.sh
#   RUNS=5         up/down cycles (median reported)
#   CHECK_RUNS=1   in how many of those cycles `flatnet check` is timed too (it probes every
#                  pod pair, ~32,600 probes at 90 pods, and takes minutes)
#   CHECK_TIMEOUT=900  seconds before a check is abandoned (timeout(1))
#
# Everything happens in lab cluster "bench-up" with its state in /tmp/flbench-state; the
# cluster is removed on exit, on error and on Ctrl-C. Prints markdown tables.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FLATNET=${FLATNET:-$ROOT/target/release/flatnet}   # override to test another build
export FLATNET_STATE_DIR=/tmp/flbench-state
CLUSTER=bench-up
RUNS=${RUNS:-5}
CHECK_RUNS=${CHECK_RUNS:-1}
CHECK_TIMEOUT=${CHECK_TIMEOUT:-900}

[[ $(id -u) == 0 ]] || { echo "run as root" >&2; exit 1; }
[[ -x $FLATNET ]] || { echo "missing $FLATNET: cargo build --workspace --release" >&2; exit 1; }

WORK=$(mktemp -d /tmp/flbench-up.XXXXXX)
cleanup() {
    # `down` is safe when the cluster is half made or already gone.
    "$FLATNET" down --cluster "$CLUSTER" >/dev/null 2>&1 || true
    rm -rf "$WORK"
    rmdir "$FLATNET_STATE_DIR" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -d $FLATNET_STATE_DIR/$CLUSTER ]]; then
    echo "a cluster $CLUSTER exists; removing it first" >&2
    "$FLATNET" down --cluster "$CLUSTER" >/dev/null
fi

# 3 nodes, one Deployment of 90 replicas with a TCP and a UDP containerPort
# (the scheduler spreads them 30 per node).
cat >"$WORK/bench-up.yaml" <<'EOF'
apiVersion: flatnet.dev/v1alpha1
kind: Cluster
metadata: {name: bench-up}
spec:
  nodes: 3
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: load, namespace: default}
spec:
  replicas: 90
  selector: {matchLabels: {app: load}}
  template:
    metadata: {labels: {app: load}}
    spec:
      containers:
      - name: agnhost
        ports: [{name: http, containerPort: 80}, {name: udp, containerPort: 80, protocol: UDP}]
EOF

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

ups=() downs=() rows=() checks=()
for ((i = 1; i <= RUNS; i++)); do
    t0=$(now)
    timeout 300 "$FLATNET" up -f "$WORK/bench-up.yaml" --cluster "$CLUSTER" >"$WORK/up.$i.log" 2>&1 ||
        { echo "up failed, see below" >&2; cat "$WORK/up.$i.log" >&2; exit 1; }
    t1=$(now)
    up=$(secs "$t0" "$t1")
    # `up` returns when every pod runs; confirm from the outside (the 90 of the Deployment;
    # the add-ons' pods are in kube-system).
    running=$("$FLATNET" get pods -n default --cluster "$CLUSTER" | awk 'NR > 1 && $2 == "Running"' | wc -l)
    [[ $running == 90 ]] || { echo "run $i: only $running/90 pods Running" >&2; exit 1; }

    check="-"
    if ((i <= CHECK_RUNS)); then
        t0=$(now)
        rc=0
        timeout "$CHECK_TIMEOUT" "$FLATNET" check --cluster "$CLUSTER" -o json \
            >"$WORK/check.$i.json" 2>"$WORK/check.$i.err" || rc=$?
        t1=$(now)
        check=$(secs "$t0" "$t1")
        # passed/total probes and the failures by path, from the JSON rows
        summary=$(python3 - "$WORK/check.$i.json" <<'EOF'
import json, sys, collections
try:
    rows = json.load(open(sys.argv[1]))["rows"]
except Exception as e:
    print("no JSON (%s)" % e); sys.exit()
bad = collections.Counter("%s %s %s" % (r["check"], r["protocol"], r["family"])
                          for r in rows if not r["ok"])
print("%d/%d probes passed%s" % (len(rows) - sum(bad.values()), len(rows),
      "; failures: " + ", ".join("%s: %d" % kv for kv in sorted(bad.items())) if bad else ""))
EOF
)
        checks+=("| $i | $check | $rc | $summary |")
    fi

    t0=$(now)
    timeout 120 "$FLATNET" down --cluster "$CLUSTER" >"$WORK/down.$i.log" 2>&1
    t1=$(now)
    down=$(secs "$t0" "$t1")
    ups+=("$up") downs+=("$down")
    rows+=("| $i | $up | $check | $down |")
    echo "run $i: up $up s, check $check s, down $down s" >&2
done

echo "# flatnet up / check / down, 3 nodes x 30 pods ($(date -u '+%Y-%m-%d %H:%M UTC'))"
echo
echo "kernel $(uname -r), $(nproc) CPUs, $RUNS runs"
echo
echo "| run | up s | check s | down s |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
up_med=$(printf '%s\n' "${ups[@]}" | median)
down_med=$(printf '%s\n' "${downs[@]}" | median)
up_max=$(printf '%s\n' "${ups[@]}" | sort -n | tail -1)
echo "| summary | value |"
echo "|---|---|"
echo "| up median (max) | $up_med s ($up_max s) |"
echo "| down median | $down_med s |"
echo "| target: up < 10 s | $(awk -v m="$up_med" 'BEGIN { print (m < 10) ? "met" : "NOT met" }') |"
if ((${#checks[@]})); then
    echo
    echo "| check run | seconds | exit code | result |"
    echo "|---|---|---|---|"
    printf '%s\n' "${checks[@]}"
fi
