#!/usr/bin/env bash
# Pod-to-pod TCP throughput (iperf3) on flatnet lab clusters versus a hand-built baseline.
#
# Run as root from anywhere:   bench/throughput.sh
#   DURATION=10    seconds per iperf3 run (plus 1 s omitted warm-up, -O 1)
#   REPS=3         runs per (implementation, backend, path, streams); median reported
#   FABRIC=1       also measure a second baseline whose nodes are joined through a bridge in
#                  a third namespace, as the lab's fabric is (0: skip it)
#
# Paths, each with 1 stream and 4 streams (-P 4), IPv4:
#   same node : pod c1 -> pod s1, both on node1 (veth - bridge - veth)
#   cross node: pod c2 on node2 -> pod s1 on node1 (vxlan encapsulation, or host-gw routes)
# Implementations:
#   flatnet : lab clusters bench-vx (backend vxlan) and bench-gw (backend host-gw), 2 nodes,
#             bare Pods pinned with spec.nodeName; state in /tmp/flbench-state
#   baseline: the same topology built with `ip` only, in namespaces flbench-{vx,gw}-*:
#             node namespaces n1/n2 joined by one veth (underlay 192.168.1.1/.2, MTU 1500),
#             per node a bridge
#             cni0 with the gateway, pods on veths (MTU 1450 under vxlan, 1500 under host-gw);
#             vxlan = flannel's layout (VNI 1, UDP 8472, learning off, VTEP = subnet address,
#             permanent neighbour + FDB entry + onlink route); host-gw = route via node IP.
#   baseline+fabric (FABRIC=1): the same, namespaces flbench-{vxf,gwf}-*, but the node
#             namespaces' eth0 are veths on a bridge in flbench-{vxf,gwf}-fab, like the lab.
# All runs are interleaved (rep > backend > path > streams > implementation, the
# implementation order flipping every time), so both see the same machine noise.
# Every iperf3 started here is killed by PID; clusters and namespaces are removed on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FLATNET=${FLATNET:-$ROOT/target/release/flatnet}   # override to test another build
export FLATNET_STATE_DIR=/tmp/flbench-state
DURATION=${DURATION:-10}
REPS=${REPS:-3}
FABRIC=${FABRIC:-1}
PORT=5201

[[ $(id -u) == 0 ]] || { echo "run as root" >&2; exit 1; }
[[ -x $FLATNET ]] || { echo "missing $FLATNET: cargo build --workspace --release" >&2; exit 1; }
command -v iperf3 >/dev/null || { echo "apt-get install -y iperf3" >&2; exit 1; }

WORK=$(mktemp -d /tmp/flbench-tp.XXXXXX)
CLUSTERS=()      # flatnet clusters made by this run
NETNS=()         # baseline namespaces made by this run
PIDFILES=()      # iperf3 servers (daemons) started by this run
CLIENT_PID=""    # the iperf3 client running now, if any

log() { echo "$*" >&2; }

cleanup() {
    set +e
    [[ -n $CLIENT_PID ]] && kill "$CLIENT_PID" 2>/dev/null
    for f in "${PIDFILES[@]}"; do
        if [[ -s $f ]]; then
            pid=$(cat "$f")
            # only if it is still an iperf3 (the PID may have been reused)
            if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == iperf3 ]]; then
                kill "$pid"
                # bounded wait until it is gone
                for _ in $(seq 50); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
            fi
        fi
    done
    for c in "${CLUSTERS[@]}"; do "$FLATNET" down --cluster "$c" >/dev/null 2>&1; done
    for n in "${NETNS[@]}"; do ip netns del "$n" 2>/dev/null; done
    rm -rf "$WORK"
    rmdir "$FLATNET_STATE_DIR" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- flatnet lab clusters
flatnet_cluster() { # NAME BACKEND
    local name=$1 backend=$2
    cat >"$WORK/$name.yaml" <<EOF
apiVersion: flatnet.dev/v1alpha1
kind: Cluster
metadata: {name: $name}
spec:
  nodes: 2
  backend: $backend
---
apiVersion: v1
kind: Pod
metadata: {name: s1, namespace: default}
spec:
  nodeName: node1
  containers: [{name: c, ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: c1, namespace: default}
spec:
  nodeName: node1
  containers: [{name: c, ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: c2, namespace: default}
spec:
  nodeName: node2
  containers: [{name: c, ports: [{containerPort: 80}]}]
EOF
    [[ -d $FLATNET_STATE_DIR/$name ]] && "$FLATNET" down --cluster "$name" >/dev/null
    CLUSTERS+=("$name")
    timeout 120 "$FLATNET" up -f "$WORK/$name.yaml" --cluster "$name" >"$WORK/$name.up.log" 2>&1 ||
        { cat "$WORK/$name.up.log" >&2; exit 1; }
}

pod_ip() { # CLUSTER POD
    "$FLATNET" get pods -n default --cluster "$1" -o json |
        python3 -c 'import json,sys; print([p["status"]["podIP"] for p in json.load(sys.stdin)["items"] if p["metadata"]["name"] == sys.argv[1]][0])' "$2"
}

# ---------------------------------------------------------------- hand-built baseline
# Everything is created inside flbench-* namespaces; veths are created in a node namespace
# with their peer placed directly in the other namespace.
newns() { ip netns add "$1"; NETNS+=("$1"); ip -n "$1" link set lo up; }

base_pod() { # PREFIX NODE(1|2) POD ADDR MTU
    local p=$1 node=$1-n$2 pod=$1-$3 addr=$4 mtu=$5
    newns "$pod"
    ip -n "$node" link add "v$3" mtu "$mtu" type veth peer name eth0 mtu "$mtu" netns "$pod"
    ip -n "$node" link set "v$3" master cni0 up
    ip -n "$node" link set "v$3" type bridge_slave hairpin on
    ip -n "$pod" addr add "$addr/24" dev eth0
    ip -n "$pod" link set eth0 up
    ip -n "$pod" route add default via "10.42.$(($2 - 1)).1"
}

base_cluster() { # PREFIX BACKEND(vxlan|host-gw) FABRIC(0|1)
    local p=$1 backend=$2 fabric=$3 podmtu=1500 i j
    [[ $backend == vxlan ]] && podmtu=1450
    newns "$p-n1"
    newns "$p-n2"
    if [[ $fabric == 1 ]]; then
        newns "$p-fab"
        ip -n "$p-fab" link add fabric0 type bridge
        ip -n "$p-fab" link set fabric0 up
        for i in 1 2; do
            ip -n "$p-fab" link add "n$i" mtu 1500 type veth peer name eth0 netns "$p-n$i"
            ip -n "$p-fab" link set "n$i" master fabric0 up
        done
    else
        ip -n "$p-n1" link add eth0 mtu 1500 type veth peer name eth0 netns "$p-n2"
    fi
    for i in 1 2; do
        local n=$p-n$i
        ip -n "$n" addr add "192.168.1.$i/24" dev eth0
        ip -n "$n" link set eth0 up
        ip netns exec "$n" sysctl -qw net.ipv4.ip_forward=1   # inside the node namespace
        ip -n "$n" link add cni0 mtu "$podmtu" type bridge
        ip -n "$n" addr add "10.42.$((i - 1)).1/24" dev cni0
        ip -n "$n" link set cni0 up
    done
    if [[ $backend == vxlan ]]; then
        for i in 1 2; do
            ip -n "$p-n$i" link add vx0 mtu 1450 address "0e:f1:00:00:00:0$i" type vxlan id 1 \
                local "192.168.1.$i" dev eth0 dstport 8472 nolearning
            ip -n "$p-n$i" addr add "10.42.$((i - 1)).0/32" dev vx0
            ip -n "$p-n$i" link set vx0 up
        done
        for i in 1 2; do
            j=$((3 - i))
            ip -n "$p-n$i" neigh add "10.42.$((j - 1)).0" lladdr "0e:f1:00:00:00:0$j" dev vx0 nud permanent
            bridge -n "$p-n$i" fdb append "0e:f1:00:00:00:0$j" dev vx0 dst "192.168.1.$j"
            ip -n "$p-n$i" route add "10.42.$((j - 1)).0/24" via "10.42.$((j - 1)).0" dev vx0 onlink
        done
    else
        ip -n "$p-n1" route add 10.42.1.0/24 via 192.168.1.2
        ip -n "$p-n2" route add 10.42.0.0/24 via 192.168.1.1
    fi
    base_pod "$p" 1 s1 10.42.0.2 "$podmtu"
    base_pod "$p" 1 c1 10.42.0.3 "$podmtu"
    base_pod "$p" 2 c2 10.42.1.2 "$podmtu"
}

# ---------------------------------------------------------------- iperf3
# Both implementations run iperf3 through `ip netns exec` (flatnet exec is exactly that).
fl_exec() { local c=$1 pod=$2; shift 2; "$FLATNET" exec --cluster "$c" "default/$pod" -- "$@"; }
base_exec() { local p=$1 pod=$2; shift 2; ip netns exec "$p-$pod" "$@"; }
basef_exec() { base_exec "$@"; }

start_server() { # KIND(fl|base|basef) WHERE(cluster|prefix)
    local f=$WORK/iperf3.$2.pid
    PIDFILES+=("$f")
    "${1}_exec" "$2" s1 iperf3 -s -D -p "$PORT" -I "$f" >/dev/null
    for _ in $(seq 50); do [[ -s $f ]] && return 0; sleep 0.1; done
    log "iperf3 server in $2 did not start"; exit 1
}

# one client run; prints Mbit/s received
client() { # KIND WHERE POD IP STREAMS
    local out=$WORK/client.json
    "${1}_exec" "$2" "$3" timeout $((DURATION + 30)) iperf3 -c "$4" -p "$PORT" -t "$DURATION" \
        -O 1 -P "$5" -J >"$out" &
    CLIENT_PID=$!
    wait "$CLIENT_PID" || { log "iperf3 client failed in $2/$3:"; cat "$out" >&2; exit 1; }
    CLIENT_PID=""
    python3 -c 'import json,sys; print("%.0f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e6))' "$out"
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ---------------------------------------------------------------- set up
log "creating flatnet clusters bench-vx, bench-gw and the baseline namespaces"
flatnet_cluster bench-vx vxlan
flatnet_cluster bench-gw host-gw
base_cluster flbench-vx vxlan 0
base_cluster flbench-gw host-gw 0
IMPLS=(fl base)
if [[ $FABRIC == 1 ]]; then
    base_cluster flbench-vxf vxlan 1
    base_cluster flbench-gwf host-gw 1
    IMPLS+=(basef)
fi
declare -A WHERE IP
WHERE[fl.vxlan]=bench-vx     WHERE[fl.host-gw]=bench-gw
WHERE[base.vxlan]=flbench-vx WHERE[base.host-gw]=flbench-gw
WHERE[basef.vxlan]=flbench-vxf WHERE[basef.host-gw]=flbench-gwf
for b in vxlan host-gw; do
    for impl in "${IMPLS[@]}"; do
        if [[ $impl == fl ]]; then IP[fl.$b]=$(pod_ip "${WHERE[fl.$b]}" s1); else IP[$impl.$b]=10.42.0.2; fi
        start_server "$impl" "${WHERE[$impl.$b]}"
        # sanity: the address and MTU the server pod has
        log "$b $impl: s1 ${IP[$impl.$b]} mtu $("${impl}_exec" "${WHERE[$impl.$b]}" s1 cat /sys/class/net/eth0/mtu)"
    done
done

# ---------------------------------------------------------------- measure, interleaved
declare -A R   # "impl backend path streams" -> space-separated Mbit/s
turn=0
for ((rep = 1; rep <= REPS; rep++)); do
    for b in vxlan host-gw; do
        for path in same cross; do
            pod=c1; [[ $path == cross ]] && pod=c2
            for streams in 1 4; do
                # rotate the order of the implementations from one measurement to the next
                n=${#IMPLS[@]} order=()
                for ((k = 0; k < n; k++)); do order+=("${IMPLS[(turn + k) % n]}"); done
                turn=$((turn + 1))
                for impl in "${order[@]}"; do
                    v=$(client "$impl" "${WHERE[$impl.$b]}" "$pod" "${IP[$impl.$b]}" "$streams")
                    R["$impl $b $path $streams"]+="$v "
                    log "rep $rep $b $path -P $streams $impl: $v Mbit/s"
                done
            done
        done
    done
done

# ---------------------------------------------------------------- report
echo "# pod-to-pod TCP throughput, flatnet vs hand-built baseline ($(date -u '+%Y-%m-%d %H:%M UTC'))"
echo
echo "kernel $(uname -r), $(nproc) CPUs; iperf3 $DURATION s (-O 1), $REPS runs each, interleaved." \
    "Mbit/s, median of the runs (the runs in brackets); ratio = flatnet median / baseline median."
echo
head="| backend | path | streams | flatnet | baseline (veth) | ratio | >= 0.95 |"
sep="|---|---|---|---|---|---|---|"
if [[ $FABRIC == 1 ]]; then
    head+=" baseline+fabric bridge | ratio |"
    sep+="---|---|"
fi
echo "$head"
echo "$sep"
med() { echo $1 | tr ' ' '\n' | median; }
for b in vxlan host-gw; do
    for path in same cross; do
        for streams in 1 4; do
            line="| $b | $path node | $streams"
            f=${R["fl $b $path $streams"]}
            fm=$(med "$f")
            line+=" | $fm (${f% })"
            for impl in "${IMPLS[@]:1}"; do
                g=${R["$impl $b $path $streams"]}
                gm=$(med "$g")
                ratio=$(awk -v a="$fm" -v b="$gm" 'BEGIN { printf "%.2f", a / b }')
                line+=" | $gm (${g% }) | $ratio"
                [[ $impl == base ]] && line+=" | $(awk -v r="$ratio" 'BEGIN { print (r >= 0.95) ? "yes" : "no" }')"
            done
            echo "$line |"
        done
    done
done
