#!/usr/bin/env python3
"""Variants of flatnet's table for the data-path harness's RULESETS= lanes: which rules of
the base chains cost what on a new connection. Reads the 10-Service table the harness
dumps and writes, next to it: bare.nft (no rule in the four base chains the forwarding
path crosses), only-<chain>.nft (that chain's rules and no other's), opt.nft (the reordered
service-checks and nat-postrouting of BENCHMARKS.md section 5).

    target/release/flatnet-bench-proxy-datapath            # with DUMP=/tmp/dp/full.nft
    python3 bench/proxy/rulesets.py /tmp/dp/full.nft
    RULESETS=/tmp/dp/bare.nft,/tmp/dp/full.nft,/tmp/dp/opt.nft \\
        target/release/flatnet-bench-proxy-datapath 3000 5
"""
import os
import re
import sys

HOOKS = ["raw-prerouting", "filter-prerouting", "nat-prerouting", "nat-postrouting"]


def keep_rules_of(lines, keep):
    """The table with the rules of the base chains not in `keep` taken out."""
    out, chain = [], None
    for line in lines:
        start = re.match(r"\s*chain (\S+) \{", line)
        if start:
            chain = start.group(1)
        body = not start and not line.strip().startswith("type ") and line.strip() != "}"
        if chain in HOOKS and chain not in keep and body:
            continue
        out.append(line)
        if line == "\t}":
            chain = None
    return "\n".join(out)


def reordered(text):
    """A first rule in service-checks returns for destinations outside the Service ranges
    and the NodePort range; nat-postrouting looks up the destination first and the hairpin
    pairs only for DNATed connections."""
    text = text.replace("\tchain service-checks {\n", "\tchain service-checks {\n"
                        "\t\tmeta nfproto ipv4 ip daddr != @service-cidrs-v4 th dport != 30000-32767 return\n"
                        "\t\tmeta nfproto ipv6 ip6 daddr != @service-cidrs-v6 th dport != 30000-32767 return\n")
    start = text.index("\tchain nat-postrouting {")
    end = text.index("\tchain mark-for-masquerade {")
    post = """\tchain nat-postrouting {
\t\ttype nat hook postrouting priority 100; policy accept;
\t\tip daddr != @pod-cidrs-v4 ip saddr @pod-cidrs-v4 jump mark-for-masquerade
\t\tip6 daddr != @pod-cidrs-v6 ip6 saddr @pod-cidrs-v6 jump mark-for-masquerade
\t\tct status dnat ip saddr . ip daddr @hairpin-v4 jump mark-for-masquerade
\t\tct status dnat ip6 saddr . ip6 daddr @hairpin-v6 jump mark-for-masquerade
\t\tmeta mark & 0x4000 == 0 return
\t\tmeta mark set meta mark ^ 0x4000
\t\tmasquerade fully-random
\t}
"""
    return text[:start] + post + text[end:]


def main():
    full = sys.argv[1]
    folder = os.path.dirname(os.path.abspath(full))
    text = open(full).read()
    lines = text.split("\n")
    variants = {"bare": keep_rules_of(lines, set()), "opt": reordered(text)}
    for hook in HOOKS:
        variants[f"only-{hook}"] = keep_rules_of(lines, {hook})
    for name, body in variants.items():
        with open(os.path.join(folder, f"{name}.nft"), "w") as f:
            f.write(body)
        print(os.path.join(folder, f"{name}.nft"))


if __name__ == "__main__":
    main()
