#!/usr/bin/env python3
"""Cluster DNS freshness: how long from `flatnet apply` of a new Service until a pod's query
for its name gets the answer. A lab cluster `bench-fresh` (2 nodes); inside the pod
`default/client` a poller sends one A query every 2 ms to the cluster DNS (10.43.0.10) and
prints the milliseconds until the first NOERROR answer. Runs as root; bounded (ROUNDS rounds,
2 s per poll at most); removes the cluster, its state folder and its temp files at the end.

Usage: bench/dns/freshness.py [ROUNDS]       (default 10)
"""
import os, shutil, socket, struct, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLATNET = os.environ.get("FLATNET", os.path.join(ROOT, "target/release/flatnet"))
CLUSTER = "bench-fresh"
ENV = dict(os.environ, FLATNET_STATE_DIR="/tmp/flbench-fresh-state")

POLLER = r'''
import socket, struct, sys, time
name = sys.argv[1]
def query(qid):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.002)
start = time.monotonic()
print("polling", flush=True)
qid = 0
while time.monotonic() - start < 2.0:
    qid = (qid + 1) % 65536
    s.sendto(query(qid), ("10.43.0.10", 53))
    try:
        while True:
            data = s.recv(4096)
            rid, flags, _, ancount = struct.unpack(">HHHH", data[:8])
            if rid == qid and flags & 0xF == 0 and ancount > 0:
                print("%.1f" % ((time.monotonic() - start) * 1000), flush=True)
                sys.exit(0)
            if rid == qid:
                break
    except socket.timeout:
        pass
print("timeout", flush=True)
'''

def flatnet(*args, check=True):
    return subprocess.run([FLATNET, *args, "--cluster", CLUSTER] if args[0] in ("down",) else [FLATNET, args[0], "--cluster", CLUSTER, *args[1:]],
                          env=ENV, check=check, capture_output=True, text=True)

def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    tmp = tempfile.mkdtemp(prefix="flbench-fresh-")
    up = os.path.join(tmp, "up.yaml")
    with open(up, "w") as f:
        f.write("apiVersion: flatnet.dev/v1alpha1\nkind: Cluster\nmetadata: {name: %s}\nspec: {nodes: 2, podCIDRs: [10.42.0.0/16], serviceCIDRs: [10.43.0.0/16]}\n---\n"
                "apiVersion: v1\nkind: Pod\nmetadata: {name: client}\nspec: {containers: [{name: c}]}\n---\n"
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 2, selector: {matchLabels: {app: web}}, template: {metadata: {labels: {app: web}}, spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}}}\n" % CLUSTER)
    flatnet("down", check=False)
    try:
        flatnet("up", "-f", up)
        results = []
        for i in range(rounds):
            svc = os.path.join(tmp, "svc%d.yaml" % i)
            with open(svc, "w") as f:
                f.write("apiVersion: v1\nkind: Service\nmetadata: {name: fresh%d}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n" % i)
            poller = subprocess.Popen(["ip", "netns", "exec", "%s.pod.default.client" % CLUSTER, "python3", "-c", POLLER,
                                       "fresh%d.default.svc.cluster.local" % i], stdout=subprocess.PIPE, text=True)
            poller.stdout.readline()  # polling has started
            t0 = time.monotonic()
            apply = subprocess.Popen([FLATNET, "apply", "--cluster", CLUSTER, "-f", svc], env=ENV,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            line = poller.stdout.readline().strip()
            poller.wait()
            apply.wait()
            results.append(line)
            print("round %d: %s ms (apply itself took %.0f ms to return)" % (i + 1, line, (time.monotonic() - t0) * 1000))
        times = sorted(float(r) for r in results if r != "timeout")
        if times:
            print("median %.1f ms, max %.1f ms, %d/%d answered within 2 s" % (times[len(times) // 2], times[-1], len(times), rounds))
    finally:
        down = flatnet("down", check=False)
        shutil.rmtree(tmp, ignore_errors=True)
        if down.returncode == 0:  # the state is what a later `down` would need otherwise
            shutil.rmtree(ENV["FLATNET_STATE_DIR"], ignore_errors=True)

if __name__ == "__main__":
    main()
