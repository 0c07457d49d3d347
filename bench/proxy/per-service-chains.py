#!/usr/bin/env python3
"""The layout flatnet does not use for plain ClusterIP Services, for comparison: one chain
per Service (pick an index into the connection's mark, then look the endpoint up in the
shared map), 10,000 Services x 10 endpoints. Prints the ruleset; load it in a scratch
namespace, never the host's:

    python3 bench/proxy/per-service-chains.py > /tmp/pc.nft
    ip netns add flbench-pc && time ip netns exec flbench-pc nft -f /tmp/pc.nft
    ip netns del flbench-pc
"""

SERVICES, ENDPOINTS = 10000, 10


def vip(s):
    return f"10.43.{s // 250}.{s % 250 + 1}"


def endpoint(e):
    return f"10.{64 + e // 65536}.{e // 256 % 256}.{e % 256}"


def main():
    out = ["table inet t {"]
    elements = ", ".join(
        f"{vip(s)} . tcp . 80 . {i} : {endpoint(s * ENDPOINTS + i)} . 8080"
        for s in range(SERVICES)
        for i in range(ENDPOINTS)
    )
    out.append(
        " map endpoints { type ipv4_addr . inet_proto . inet_service . mark :"
        f" ipv4_addr . inet_service; elements = {{ {elements} }} }}"
    )
    dispatch = ", ".join(f"{vip(s)} . tcp . 80 : goto svc-{s}" for s in range(SERVICES))
    out.append(
        " map dispatch { type ipv4_addr . inet_proto . inet_service : verdict;"
        f" elements = {{ {dispatch} }} }}"
    )
    for s in range(SERVICES):
        out.append(
            f" chain svc-{s} {{\n  ct mark set numgen random mod {ENDPOINTS}\n"
            "  meta l4proto tcp dnat ip addr . port to"
            " ip daddr . meta l4proto . th dport . ct mark map @endpoints\n }"
        )
    out.append(
        " chain pre { type nat hook prerouting priority -100; policy accept;\n"
        "  ip daddr . meta l4proto . th dport vmap @dispatch\n }\n}"
    )
    print("\n".join(out))


if __name__ == "__main__":
    main()
