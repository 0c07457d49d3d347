#!/usr/bin/env bash
# Diagnostic for bench/throughput.sh: what does a netfilter ruleset like flatnet's service
# proxy (conntrack "ct state new" at priority -110, empty nat hooks) cost on the hand-built
# vxlan cross-node path, and how much of that would skipping conntrack for pod-to-pod
# traffic give back? Two node namespaces joined by a veth, a pod on each, iperf3 1 stream
# 5 s; RUNS rounds alternate: no ruleset / the ruleset in both nodes / plus a raw-priority
# `notrack` for packets from a local pod to a remote pod (the sender's side) / plus
# `notrack` for all pod <-> pod packets on both nodes (not usable as is: replies of
# Service connections need conntrack; an upper bound) / plus `notrack` for the vxlan
# underlay's own UDP packets (port 8472, in and out of each node), which are otherwise
# tracked as a second flow under every pod flow.
# Run as root:  bench/netfilter-ab.sh      (RUNS=5)
# Everything lives in namespaces flbench-a-*; the iperf3 server is killed by PID on exit.
set -euo pipefail
[[ $(id -u) == 0 ]] || { echo "run as root" >&2; exit 1; }
RUNS=${RUNS:-5}
NS=(flbench-a-n1 flbench-a-n2 flbench-a-s1 flbench-a-c2); PIDF=/tmp/flbench-ab.pid
cleanup() {
  set +e
  if [[ -s $PIDF ]]; then
    pid=$(cat $PIDF)
    [[ $(cat /proc/$pid/comm 2>/dev/null) == iperf3 ]] && kill "$pid"
    for _ in $(seq 50); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
  fi
  for n in "${NS[@]}"; do ip netns del $n; done; rm -f $PIDF
}
trap cleanup EXIT
trap "exit 130" INT
trap "exit 143" TERM
for n in "${NS[@]}"; do ip netns add $n; ip -n $n link set lo up; done
ip -n flbench-a-n1 link add eth0 type veth peer name eth0 netns flbench-a-n2
for i in 1 2; do n=flbench-a-n$i; j=$((3-i))
  ip -n $n addr add 192.168.1.$i/24 dev eth0; ip -n $n link set eth0 up; ip netns exec $n sysctl -qw net.ipv4.ip_forward=1
  ip -n $n link add cni0 mtu 1450 type bridge; ip -n $n addr add 10.42.$((i-1)).1/24 dev cni0; ip -n $n link set cni0 up
  ip -n $n link add vx0 mtu 1450 address 0e:f1:00:00:00:0$i type vxlan id 1 local 192.168.1.$i dev eth0 dstport 8472 nolearning
  ip -n $n addr add 10.42.$((i-1)).0/32 dev vx0; ip -n $n link set vx0 up; done
for i in 1 2; do n=flbench-a-n$i; j=$((3-i))
  ip -n $n neigh add 10.42.$((j-1)).0 lladdr 0e:f1:00:00:00:0$j dev vx0 nud permanent
  bridge -n $n fdb append 0e:f1:00:00:00:0$j dev vx0 dst 192.168.1.$j
  ip -n $n route add 10.42.$((j-1)).0/24 via 10.42.$((j-1)).0 dev vx0 onlink; done
pod() { ip -n flbench-a-n$1 link add v$2 mtu 1450 type veth peer name eth0 mtu 1450 netns flbench-a-$2
  ip -n flbench-a-n$1 link set v$2 master cni0 up; ip -n flbench-a-$2 addr add $3/24 dev eth0; ip -n flbench-a-$2 link set eth0 up
  ip -n flbench-a-$2 route add default via 10.42.$(($1-1)).1; }
pod 1 s1 10.42.0.2; pod 2 c2 10.42.1.2
ip netns exec flbench-a-s1 iperf3 -s -D -I $PIDF; sleep 0.5
nft_on() { for i in 1 2; do ip netns exec flbench-a-n$i nft -f - <<'NFT'
table inet t {
  chain pre { type filter hook prerouting priority -110; policy accept; ct state new counter; }
  chain out { type filter hook output priority -110; policy accept; ct state new counter; }
  chain natpre { type nat hook prerouting priority -100; policy accept; }
  chain natpost { type nat hook postrouting priority 100; policy accept; }
}
NFT
done; }
nt_on() { for i in 1 2; do ip netns exec flbench-a-n$i nft -f - <<NFT
table inet r {
  chain raw { type filter hook prerouting priority -300; policy accept;
    iifname "v*" ip saddr 10.42.$((i-1)).0/24 ip daddr 10.42.0.0/16 ip daddr != 10.42.$((i-1)).0/24 notrack
  }
}
NFT
done; }
nt_off() { for i in 1 2; do ip netns exec flbench-a-n$i nft delete table inet r; done; }
both_on() { for i in 1 2; do ip netns exec flbench-a-n$i nft -f - <<NFT
table inet r {
  chain raw { type filter hook prerouting priority -300; policy accept;
    ip saddr 10.42.0.0/16 ip daddr 10.42.0.0/16 notrack
  }
}
NFT
done; }
vx_on() { for i in 1 2; do ip netns exec flbench-a-n$i nft -f - <<'NFT'
table inet r {
  chain raw { type filter hook prerouting priority -300; policy accept; udp dport 8472 notrack; }
  chain rawout { type filter hook output priority -300; policy accept; udp dport 8472 notrack; }
}
NFT
done; }
nft_off() { for i in 1 2; do ip netns exec flbench-a-n$i nft delete table inet t; done; }
run() { ip netns exec flbench-a-c2 timeout 30 iperf3 -c 10.42.0.2 -t 5 -O 1 -J | python3 -c 'import json,sys; print("%.0f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))'; }
off=() on=() nt=() both=() vx=()
for ((r = 1; r <= RUNS; r++)); do off+=($(run)); nft_on; on+=($(run)); nt_on; nt+=($(run)); nt_off; both_on; both+=($(run)); nt_off; vx_on; vx+=($(run)); nt_off; nft_off; done
med() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo "| node netfilter | Mbit/s (runs) | median |"
echo "|---|---|---|"
echo "| none | ${off[*]} | $(med "${off[@]}") |"
echo "| conntrack + nat hooks | ${on[*]} | $(med "${on[@]}") |"
echo "| + notrack local pod -> remote pod (sender side) | ${nt[*]} | $(med "${nt[@]}") |"
echo "| + notrack all pod <-> pod (both sides) | ${both[*]} | $(med "${both[@]}") |"
echo "| + notrack vxlan underlay UDP 8472 (both nodes) | ${vx[*]} | $(med "${vx[@]}") |"
echo
echo "ratio notrack underlay / without: $(awk -v a="$(med "${vx[@]}")" -v b="$(med "${off[@]}")" 'BEGIN { printf "%.3f", a / b }')"
echo "ratio notrack both sides / without: $(awk -v a="$(med "${both[@]}")" -v b="$(med "${off[@]}")" 'BEGIN { printf "%.3f", a / b }')"
echo "ratio with / without: $(awk -v a="$(med "${on[@]}")" -v b="$(med "${off[@]}")" 'BEGIN { printf "%.2f", a / b }')"
