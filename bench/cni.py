#!/usr/bin/env python3
"""CNI ADD / DEL latency: flatnet-cni versus the reference bridge + host-local plugins.

Run as root from the workspace root:

    python3 bench/cni.py                 # IPv4 only, defaults below
    python3 bench/cni.py --dual          # also dual-stack (IPv4 + IPv6) for both plugins

What it does
------------
* Creates, per plugin and address family, a "node" network namespace
  (flbench-node-<plugin><fam>) and a pool of "pod" namespaces (flbench-<plugin>-p<i>).
  Nothing is created in the root namespace.
* The driver (this process) setns()es its own thread into the node namespace and then runs
  the plugin binary with subprocess.run: the launcher is identical for both plugins and does
  not pay for `ip netns exec` (which forks, unshares a mount namespace and remounts /sys).
  Before every exec the driver checks that the calling thread is in the expected node
  namespace, so a plugin can never run in the root namespace.
* Wall time of one invocation = time.perf_counter() around subprocess.run, i.e. fork/exec,
  the plugin's work (IPAM + bridge + veth + addresses + routes) and its exit.
* Sequential: --rounds rounds of --seq ADDs then --seq DELs.  The two plugins are interleaved
  invocation by invocation (flatnet ADD pod i, reference ADD pod i, ...), and the order inside
  each pair flips every round, so both see the same machine noise.
* Parallel: --par-rounds rounds; in each, per plugin (order alternating), --par-width
  concurrent ADDs (one thread each, released together by a barrier), then as many
  concurrent DELs.
* Prints markdown tables: median and p99 (nearest rank) per plugin, and the ratio of the
  medians flatnet / reference.
* Cleans up (namespaces, IPAM data dirs) on exit, on error and on SIGINT/SIGTERM.
"""
import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

CLONE_NEWNET = 0x40000000
REF_BIN_DIR = "/usr/lib/cni"
PREFIX = "flbench-"

libc = ctypes.CDLL(None, use_errno=True)


def setns(fd):
    """Move the calling thread into the network namespace open as fd (os.setns is 3.12+)."""
    if libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "setns: " + os.strerror(e))


def cur_netns_ino():
    return os.stat("/proc/thread-self/ns/net").st_ino


def sh(*args, check=True, **kw):
    return subprocess.run(list(args), check=check, **kw)


def ip_batch(lines):
    """Runs many `ip` commands in one process (much faster than one process each)."""
    if not lines:
        return
    with tempfile.NamedTemporaryFile("w", prefix="flbench-", suffix=".batch", delete=False) as f:
        f.write("\n".join(lines) + "\n")
        name = f.name
    try:
        # -force: keep going past errors (used by cleanup, where some names may be gone)
        sh("ip", "-force", "-batch", name, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
           check=False)
    finally:
        os.unlink(name)


def pct(xs, p):
    """Nearest-rank percentile."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


class Plugin:
    """One plugin under test in one address family: its node namespace, pods and config."""

    def __init__(self, key, label, binary, conf, node_ns, pod_prefix, env_extra):
        self.key, self.label, self.binary, self.conf = key, label, binary, conf
        self.node_ns, self.pod_prefix, self.env_extra = node_ns, pod_prefix, env_extra
        self.conf_bytes = json.dumps(conf).encode()
        self.fd = None
        self.ino = None

    def open(self):
        self.fd = os.open("/run/netns/" + self.node_ns, os.O_RDONLY)
        self.ino = os.fstat(self.fd).st_ino

    def pod(self, i):
        return "%s%d" % (self.pod_prefix, i)

    def invoke(self, command, cid, i):
        """One plugin invocation from the current thread (which must be in the node ns)."""
        if cur_netns_ino() != self.ino:
            raise RuntimeError("refusing to exec %s: thread not in %s" % (self.label, self.node_ns))
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": cid,
            "CNI_NETNS": "/run/netns/" + self.pod(i),
            "CNI_IFNAME": "eth0",
        }
        env.update(self.env_extra)
        t0 = time.perf_counter()
        r = subprocess.run([self.binary], input=self.conf_bytes, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        dt = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError("%s %s %s failed (%d): %s %s" % (
                self.label, command, cid, r.returncode, r.stdout.decode()[:500],
                r.stderr.decode()[:500]))
        if command == "ADD":
            res = json.loads(r.stdout)
            if not res.get("ips"):
                raise RuntimeError("%s ADD returned no IPs: %s" % (self.label, r.stdout[:300]))
        return dt


def make_plugins(args, fam):
    """The two plugins for one family ('4' or '46'); subnets and bridges never overlap."""
    fl_ranges = [[{"subnet": "10.42.9.0/24"}]]
    ref_ranges = [[{"subnet": "10.42.10.0/24"}]]
    if fam == "46":
        fl_ranges = [[{"subnet": "10.42.11.0/24"}], [{"subnet": "fd00:10:42:b::/64"}]]
        ref_ranges = [[{"subnet": "10.42.12.0/24"}], [{"subnet": "fd00:10:42:c::/64"}]]
    fl_conf = {"cniVersion": "1.1.0", "name": "bench", "type": "flatnet-cni", "bridge": "cni0",
               "mtu": 1500,
               "ipam": {"type": "host-local", "ranges": fl_ranges,
                        "dataDir": "/tmp/flbench-ipam-fl" + fam}}
    ref_conf = {"cniVersion": "1.0.0", "name": "bench", "type": "bridge", "bridge": "cni1",
                "isGateway": True, "mtu": 1500, "hairpinMode": True,
                "ipam": {"type": "host-local", "ranges": ref_ranges,
                         "dataDir": "/tmp/flbench-ipam-ref" + fam}}
    fl = Plugin("fl", "flatnet-cni", args.flatnet_cni, fl_conf, PREFIX + "node-fl" + fam,
                PREFIX + "fl-p", {"CNI_PATH": os.path.dirname(args.flatnet_cni)})
    ref = Plugin("ref", "bridge+host-local", REF_BIN_DIR + "/bridge", ref_conf,
                 PREFIX + "node-ref" + fam, PREFIX + "ref-p", {"CNI_PATH": REF_BIN_DIR})
    return fl, ref


ROOT_FD = None
CREATED_NS = []


def cleanup():
    """Back to the root namespace, delete every namespace and data dir this run made."""
    try:
        if ROOT_FD is not None:
            setns(ROOT_FD)
    except OSError:
        pass
    ip_batch(["netns del " + n for n in CREATED_NS])
    CREATED_NS.clear()
    for d in os.listdir("/tmp"):
        if d.startswith("flbench-ipam-"):
            sh("rm", "-rf", "/tmp/" + d, check=False)


def run_seq(pairs, n, rnd, samples):
    """n ADDs then n DELs, the two plugins interleaved invocation by invocation."""
    order = pairs if rnd % 2 == 0 else pairs[::-1]
    for cmd in ("ADD", "DEL"):
        for i in range(n):
            for p in order:
                setns(p.fd)
                samples[(p.key, cmd)].append(p.invoke(cmd, "seq-%s-%d-%d" % (p.key, rnd, i), i))


def run_par(pairs, width, rnd, samples, makespans):
    """Per plugin: width concurrent ADDs, then width concurrent DELs."""
    order = pairs if rnd % 2 == 0 else pairs[::-1]
    for p in order:
        setns(p.fd)  # threads created below inherit this namespace
        for cmd in ("ADD", "DEL"):
            barrier = threading.Barrier(width)
            out, errs = [None] * width, []

            def work(i, p=p, cmd=cmd, barrier=barrier, out=out, errs=errs):
                try:
                    barrier.wait()
                    out[i] = p.invoke(cmd, "par-%s-%d-%d" % (p.key, rnd, i), i)
                except Exception as e:  # reported by the main thread
                    errs.append(e)
            ts = [threading.Thread(target=work, args=(i,)) for i in range(width)]
            t0 = time.perf_counter()
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            makespans[(p.key, cmd)].append(time.perf_counter() - t0)
            if errs:
                raise errs[0]
            samples[(p.key, cmd)].extend(out)


def table(title, fl, ref, samples, note=""):
    ms = lambda s: "%.1f" % (s * 1000)
    print("\n### %s\n" % title)
    if note:
        print(note + "\n")
    print("| op | n | flatnet-cni median ms | flatnet-cni p99 ms | bridge+host-local median ms "
          "| bridge+host-local p99 ms | median ratio flatnet/ref |")
    print("|---|---|---|---|---|---|---|")
    for cmd in ("ADD", "DEL"):
        a, b = samples[("fl", cmd)], samples[("ref", cmd)]
        print("| %s | %d | %s | %s | %s | %s | %.2f |" % (
            cmd, len(a), ms(median(a)), ms(pct(a, 99)), ms(median(b)), ms(pct(b, 99)),
            median(a) / median(b)))


def main():
    global ROOT_FD
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--flatnet-cni", default=os.environ.get("FLATNET_CNI", os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "target/release/flatnet-cni")))
    ap.add_argument("--seq", type=int, default=200, help="ADDs (then DELs) per sequential round")
    ap.add_argument("--rounds", type=int, default=3, help="sequential rounds")
    ap.add_argument("--par-rounds", type=int, default=20)
    ap.add_argument("--par-width", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--dual", action="store_true", help="also measure dual-stack")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    for b in (args.flatnet_cni, REF_BIN_DIR + "/bridge", REF_BIN_DIR + "/host-local"):
        if not os.access(b, os.X_OK):
            sys.exit("missing %s (cargo build --workspace --release; "
                     "apt-get install -y containernetworking-plugins)" % b)
    if threading.active_count() != 1:
        sys.exit("driver must be single-threaded before setns")
    ROOT_FD = os.open("/proc/self/ns/net", os.O_RDONLY)
    root_ino = os.fstat(ROOT_FD).st_ino
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *a: sys.exit(129))

    fams = ["4", "46"] if args.dual else ["4"]
    npods = max(args.seq, args.par_width, args.warmup)
    try:
        # --- set-up: node namespaces (lo up) and the pod namespaces, shared by the families
        lines = []
        for fam in fams:
            for p in make_plugins(args, fam):
                CREATED_NS.append(p.node_ns)
                lines += ["netns add " + p.node_ns]
        for key in ("fl", "ref"):
            for i in range(npods):
                CREATED_NS.append("%s%s-p%d" % (PREFIX, key, i))
                lines.append("netns add %s%s-p%d" % (PREFIX, key, i))
        ip_batch(lines)
        for n in CREATED_NS:
            if not os.path.exists("/run/netns/" + n):
                raise RuntimeError("namespace %s was not created" % n)
        print("# CNI ADD/DEL latency: flatnet-cni vs bridge+host-local (%s)" % time.strftime(
            "%Y-%m-%d %H:%M %Z"))
        print("\nkernel %s, %d CPUs; sequential: %d rounds x %d ADD then %d DEL, interleaved; "
              "parallel: %d rounds x %d concurrent ADD then DEL" % (
                  os.uname().release, os.cpu_count(), args.rounds, args.seq, args.seq,
                  args.par_rounds, args.par_width))
        for fam in fams:
            fl, ref = make_plugins(args, fam)
            for p in (fl, ref):
                p.open()
                if p.ino == root_ino:
                    raise RuntimeError("node namespace is the root namespace")
                setns(p.fd)
                sh("ip", "link", "set", "lo", "up")
            pairs = [fl, ref]
            # warm-up (page cache, first bridge creation): not counted
            warm = {(p.key, c): [] for p in pairs for c in ("ADD", "DEL")}
            for p in pairs:
                setns(p.fd)
                for i in range(args.warmup):
                    p.invoke("ADD", "warm-%d" % i, i)
                for i in range(args.warmup):
                    p.invoke("DEL", "warm-%d" % i, i)
            seq = {(p.key, c): [] for p in pairs for c in ("ADD", "DEL")}
            for rnd in range(args.rounds):
                run_seq(pairs, args.seq, rnd, seq)
            par = {(p.key, c): [] for p in pairs for c in ("ADD", "DEL")}
            mk = {(p.key, c): [] for p in pairs for c in ("ADD", "DEL")}
            for rnd in range(args.par_rounds):
                run_par(pairs, args.par_width, rnd, par, mk)
            setns(ROOT_FD)
            famname = "IPv4" if fam == "4" else "dual-stack IPv4+IPv6"
            table("%s, sequential (%d rounds x %d)" % (famname, args.rounds, args.seq),
                  fl, ref, seq)
            table("%s, %d in parallel (%d rounds)" % (famname, args.par_width, args.par_rounds),
                  fl, ref, par,
                  "per-invocation latency; median batch wall time ADD: flatnet %.1f ms, "
                  "reference %.1f ms; DEL: flatnet %.1f ms, reference %.1f ms" % (
                      median(mk[("fl", "ADD")]) * 1000, median(mk[("ref", "ADD")]) * 1000,
                      median(mk[("fl", "DEL")]) * 1000, median(mk[("ref", "DEL")]) * 1000))
            sys.stdout.flush()
    finally:
        cleanup()


if __name__ == "__main__":
    main()
