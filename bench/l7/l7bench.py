#!/usr/bin/env python3
"""Helper of bench/l7/run.sh: writes the configurations, parses wrk / h2load output,
times route changes and prints the result table. Standard library only; loopback only.

Subcommands (run.sh calls them; see --help of each):
  gen DIR ...            write backend/nginx/haproxy configs and flatnet manifests
  wrk FILE               one wrk output -> "rps p50_ms p99_ms errors"
  h2 FILE LOG            one h2load output + its --log-file -> "rps p50_ms p99_ms errors"
  reroute ...            time route changes (flatnet: rename a manifest; nginx: reload)
  report RESULTS ...     medians, ratios, targets -> markdown
"""
import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import time

# ---------------------------------------------------------------------------------------
# Configurations


def host_name(i):
    """The i-th host (1-based): host-00001.example.com ... host-10000.example.com."""
    return f"host-{i:05d}.example.com"


# The routes every proxy gets, per host: /api (Prefix) -> Service api, / (Prefix) -> web.
# Both Services have the same two endpoints (the backend's ports b1 and b2); web-new has
# one endpoint (port bnew) that answers "new" and is used by the route-change test.


def ingress_yaml(i, api_service="api", tls_secret=None):
    name = f"host-{i:05d}"
    tls = ""
    if tls_secret:
        tls = f"""  tls:
  - hosts: [{host_name(i)}]
    secretName: {tls_secret}
"""
    return f"""apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  namespace: default
spec:
  ingressClassName: flatnet
{tls}  rules:
  - host: {host_name(i)}
    http:
      paths:
      - path: /api
        pathType: Prefix
        backend:
          service:
            name: {api_service}
            port:
              number: 80
      - path: /
        pathType: Prefix
        backend:
          service:
            name: web
            port:
              number: 80
"""


def service_yaml(name, ports):
    """A Service (port 80, name http) and one EndpointSlice per backend port (an
    EndpointSlice's ports apply to all its endpoints, so two ports need two slices)."""
    docs = [f"""apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
spec:
  ports:
  - name: http
    port: 80
    targetPort: http
    protocol: TCP
"""]
    for n, port in enumerate(ports, 1):
        docs.append(f"""apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-{n}
  namespace: default
  labels:
    kubernetes.io/service-name: {name}
addressType: IPv4
ports:
- name: http
  port: {port}
  protocol: TCP
endpoints:
- addresses: ["127.0.0.1"]
  conditions:
    ready: true
""")
    return "---\n".join(docs)


def base_manifests(b1, b2, bnew, cert_pem=None, key_pem=None):
    import base64
    docs = ["""apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: flatnet
spec:
  controller: flatnet.dev/ingress-controller
"""]
    docs.append(service_yaml("web", [b1, b2]))
    docs.append(service_yaml("api", [b1, b2]))
    docs.append(service_yaml("web-new", [bnew]))
    if cert_pem:
        crt = base64.b64encode(cert_pem).decode()
        key = base64.b64encode(key_pem).decode()
        docs.append(f"""apiVersion: v1
kind: Secret
metadata:
  name: bench-tls
  namespace: default
type: kubernetes.io/tls
data:
  tls.crt: {crt}
  tls.key: {key}
""")
    return "---\n".join(docs)


PER_FILE = 100  # Ingresses (and nginx server blocks) per file


def chunk_of(i):
    """File index holding host i (1-based)."""
    return (i - 1) // PER_FILE


def ingress_file(hosts_dir, chunk):
    return os.path.join(hosts_dir, f"ingresses-{chunk:03d}.yaml")


def write_ingress_chunk(path, chunk, nhosts, changed=None, tls_secret=None):
    """changed: (host index, api service) to override one host's /api backend."""
    first = chunk * PER_FILE + 1
    last = min(nhosts, first + PER_FILE - 1)
    docs = []
    for i in range(first, last + 1):
        api = changed[1] if changed and changed[0] == i else "api"
        docs.append(ingress_yaml(i, api, tls_secret))
    with open(path, "w") as f:
        f.write("---\n".join(docs))


def nginx_server_block(i, port, api_upstream="api", h2c_port=None, tls_port=None, tmp=None):
    listens = f"    listen 127.0.0.1:{port};\n"
    if h2c_port:
        listens += f"    listen 127.0.0.1:{h2c_port} http2;\n"
    if tls_port:
        listens += (f"    listen 127.0.0.1:{tls_port} ssl http2;\n"
                    f"    ssl_certificate {tmp}/tls.crt;\n"
                    f"    ssl_certificate_key {tmp}/tls.key;\n")
    return f"""server {{
{listens}    server_name {host_name(i)};
    location / {{ proxy_pass http://web; }}
    location = /api {{ proxy_pass http://{api_upstream}; }}
    location /api/ {{ proxy_pass http://{api_upstream}; }}
}}
"""


def nginx_chunk_file(servers_dir, chunk):
    return os.path.join(servers_dir, f"servers-{chunk:03d}.conf")


def write_nginx_chunk(path, chunk, nhosts, port, changed=None, h2c_port=None, tls_port=None,
                      tmp=None):
    first = chunk * PER_FILE + 1
    last = min(nhosts, first + PER_FILE - 1)
    with open(path, "w") as f:
        for i in range(first, last + 1):
            up = changed[1] if changed and changed[0] == i else "api"
            f.write(nginx_server_block(i, port, up, h2c_port, tls_port, tmp))


def nginx_common(name, tmp, workers):
    """Top of an nginx.conf of ours: foreground, our own pid file, logs and temp paths."""
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    return d, f"""worker_processes {workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
"""


def nginx_temp_paths(d):
    return f"""    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
"""


def gen(args):
    tmp = args.dir
    p = args
    cert_pem = key_pem = None
    if os.path.exists(os.path.join(tmp, "tls.crt")):
        cert_pem = open(os.path.join(tmp, "tls.crt"), "rb").read()
        key_pem = open(os.path.join(tmp, "tls.key"), "rb").read()

    # Backend: one nginx, `return 200`; ports b1, b2 ("ok"), bnew ("new"), bh2 (h2c, for
    # the direct HTTP/2 case), btls (h2 over TLS, direct).
    d, top = nginx_common("backend", tmp, p.backend_workers)
    tls_listen = ""
    if cert_pem:
        tls_listen = (f"        listen 127.0.0.1:{p.btls} ssl http2;\n"
                      f"        ssl_certificate {tmp}/tls.crt;\n"
                      f"        ssl_certificate_key {tmp}/tls.key;\n")
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(top + f"""http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
{nginx_temp_paths(d)}    default_type text/plain;
    server {{
        listen 127.0.0.1:{p.b1} backlog=4096;
        listen 127.0.0.1:{p.b2} backlog=4096;
        listen 127.0.0.1:{p.bh2} http2;
{tls_listen}        location / {{ return 200 "ok\\n"; }}
    }}
    server {{
        listen 127.0.0.1:{p.bnew};
        location / {{ return 200 "new\\n"; }}
    }}
}}
""")

    # nginx as the proxy, 10 hosts (with h2c and TLS listeners) and 10,000 hosts.
    for name, nhosts, port, h2c, tlsp in (("nginx10", p.hosts_small, p.nginx_http, p.nginx_h2c,
                                           p.nginx_tls if cert_pem else None),
                                          ("nginx10k", p.hosts_large, p.nginx_large, None, None)):
        d, top = nginx_common(name, tmp, p.proxy_workers)
        servers = os.path.join(d, "servers")
        os.makedirs(servers, exist_ok=True)
        for chunk in range(chunk_of(nhosts) + 1):
            write_nginx_chunk(nginx_chunk_file(servers, chunk), chunk, nhosts, port,
                              h2c_port=h2c, tls_port=tlsp, tmp=tmp)
        default_listens = f"        listen 127.0.0.1:{port} default_server;\n"
        if h2c:
            default_listens += f"        listen 127.0.0.1:{h2c} default_server http2;\n"
        up = ""
        for u, ports in (("web", [p.b1, p.b2]), ("api", [p.b1, p.b2]), ("webnew", [p.bnew])):
            servers_lines = "".join(f"        server 127.0.0.1:{x};\n" for x in ports)
            up += f"""    upstream {u} {{
{servers_lines}        keepalive 64;
        keepalive_requests 10000000;
        keepalive_timeout 300s;
    }}
"""
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write(top + f"""http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server_names_hash_max_size 65536;
    server_names_hash_bucket_size 64;
{nginx_temp_paths(d)}    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
{up}    server {{
{default_listens}        return 404;
    }}
    include {servers}/*.conf;
}}
""")

    # HAProxy, 10 hosts: host ACLs and the path rule, the same two upstream endpoints.
    d = os.path.join(tmp, "haproxy")
    os.makedirs(d, exist_ok=True)
    rules = ""
    for i in range(1, p.hosts_small + 1):
        rules += f"    acl h{i} hdr(host),field(1,:) -i {host_name(i)}\n"
        rules += f"    use_backend api if h{i} p_api\n"
        rules += f"    use_backend web if h{i}\n"
    tls_bind = ""
    if cert_pem:
        with open(os.path.join(d, "cert.pem"), "wb") as f:
            f.write(cert_pem + key_pem)
        tls_bind = f"    bind 127.0.0.1:{p.haproxy_tls} ssl crt {d}/cert.pem alpn h2,http/1.1\n"
    srv = f"""    balance roundrobin
    http-reuse always
    server b1 127.0.0.1:{p.b1}
    server b2 127.0.0.1:{p.b2}
"""
    with open(os.path.join(d, "haproxy.cfg"), "w") as f:
        f.write(f"""global
    nbthread {p.proxy_workers}
    maxconn 4096
    log stderr format raw local0 err

defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s

frontend fe
    bind 127.0.0.1:{p.haproxy_http}
    bind 127.0.0.1:{p.haproxy_h2c} proto h2
{tls_bind}    option forwardfor
    acl p_api path /api
    acl p_api path_beg /api/
{rules}
backend web
{srv}
backend api
{srv}""")

    # flatnet: manifests (10 hosts, with TLS when a certificate exists; 10,000 hosts).
    for name, nhosts, tls in (("flatnet10", p.hosts_small, "bench-tls" if cert_pem else None),
                              ("flatnet10k", p.hosts_large, None)):
        m = os.path.join(tmp, name, "manifests")
        os.makedirs(m, exist_ok=True)
        with open(os.path.join(m, "base.yaml"), "w") as f:
            f.write(base_manifests(p.b1, p.b2, p.bnew, cert_pem if tls else None,
                                   key_pem if tls else None))
        for chunk in range(chunk_of(nhosts) + 1):
            write_ingress_chunk(ingress_file(m, chunk), chunk, nhosts, tls_secret=tls)
        os.makedirs(os.path.join(tmp, name, "stage"), exist_ok=True)


# ---------------------------------------------------------------------------------------
# Parsing


def to_ms(text):
    """wrk's latency: 812.00us, 1.23ms, 1.02s, 1.00m."""
    for unit, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)


def parse_wrk(path):
    rps = p50 = p99 = None
    errors = 0
    for line in open(path):
        s = line.split()
        if not s:
            continue
        if s[0] == "Requests/sec:":
            rps = float(s[1])
        elif s[0] == "50%":
            p50 = to_ms(s[1])
        elif s[0] == "99%":
            p99 = to_ms(s[1])
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            errors += int(s[-1])
        elif s[0] == "Socket" and s[1] == "errors:":
            # Socket errors: connect 0, read 0, write 0, timeout 0
            errors += sum(int(x.rstrip(",")) for x in s[3::2])
    return rps, p50, p99, errors


def percentile(sorted_values, q):
    """Nearest rank."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def parse_h2(path, log):
    rps = None
    errors = 0
    for line in open(path):
        s = line.split()
        if line.startswith("finished in"):
            rps = float(s[3])
        elif line.startswith("requests:"):
            # requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout
            errors += int(s[9]) + int(s[11]) + int(s[13])
        elif line.startswith("status codes:"):
            errors += int(s[4]) + int(s[6]) + int(s[8])  # 3xx 4xx 5xx
    lat = []
    if os.path.exists(log):
        for line in open(log):
            f = line.split("\t")
            if len(f) >= 3:
                lat.append(int(f[2]) / 1000.0)
    lat.sort()
    return rps, percentile(lat, 50), percentile(lat, 99), errors


def fmt(v, nd=2):
    return "n/a" if v is None else f"{v:.{nd}f}"


# ---------------------------------------------------------------------------------------
# Route change timing


def get_body(port, host, path, timeout=1.0):
    """One GET on a new connection; the body, or None on any error or non-200."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", path, headers={"Host": host, "Connection": "close"})
        r = c.getresponse()
        body = r.read().decode(errors="replace").strip()
        c.close()
        return body if r.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None


def wait_for(port, host, path, want, t0, deadline_s, every_s):
    """Polls until the body equals want; ms since t0, or None after the deadline."""
    n = 0
    while True:
        n += 1
        if get_body(port, host, path) == want:
            return (time.monotonic() - t0) * 1000.0, n
        if time.monotonic() - t0 > deadline_s:
            return None, n
        time.sleep(every_s)


def reroute(args):
    """Flips host H's /api backend between api ("ok") and web-new ("new") N times, and
    prints one line per flip: "<kind> <flip> <ms or timeout> <polls>"."""
    host = host_name(args.host)
    chunk = chunk_of(args.host)
    results = []
    for flip in range(1, args.flips + 1):
        to_new = flip % 2 == 1
        want = "new" if to_new else "ok"
        changed = (args.host, "web-new" if to_new else "api") if args.kind == "flatnet" else \
            (args.host, "webnew" if to_new else "api")
        if args.kind == "flatnet":
            # Write the changed file outside the folder, then rename it in (atomic).
            staged = os.path.join(args.stage, f"ingresses-{chunk:03d}.yaml")
            write_ingress_chunk(staged, chunk, args.nhosts, changed, args.tls_secret or None)
            t0 = time.monotonic()
            os.rename(staged, ingress_file(args.conf, chunk))
        else:
            # nginx: the clock starts before the config is written; then `nginx -s reload`.
            t0 = time.monotonic()
            staged = os.path.join(args.stage, f"servers-{chunk:03d}.conf")
            write_nginx_chunk(staged, chunk, args.nhosts, args.nginx_port, changed,
                              args.nginx_h2c or None, args.nginx_tls or None, args.tmp)
            os.rename(staged, nginx_chunk_file(args.conf, chunk))
            subprocess.run(["nginx", "-c", args.nginx_conf, "-s", "reload"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ms, polls = wait_for(args.port, host, "/api/items", want, t0, args.deadline,
                             args.every / 1000.0)
        results.append(ms)
        print(f"{args.kind} flip={flip} to={want} ms={fmt(ms, 1) if ms is not None else 'timeout'}"
              f" polls={polls}", flush=True)
        # Let the proxy settle (old nginx workers finish) before the next change.
        time.sleep(args.pause)


# ---------------------------------------------------------------------------------------
# Report


def med(values):
    v = [x for x in values if x is not None]
    return statistics.median(v) if v else None


def report(args):
    # RESULTS lines: "<proto> <target> <rep> <rps> <p50> <p99> <errors> <cpu s> <duration s>"
    # (the server's CPU seconds during the run: the proxy's, or the backend's for direct)
    runs = {}
    for line in open(args.results):
        s = line.split()
        if len(s) != 9:
            continue
        proto, target, _, rps, p50, p99, err, cpu, dur = s
        conv = lambda x: None if x == "n/a" else float(x)
        per_cpu = None
        if conv(rps) and float(cpu) > 0:
            per_cpu = conv(rps) * float(dur) / float(cpu)
        runs.setdefault((proto, target), []).append((conv(rps), conv(p50), conv(p99), int(err),
                                                     per_cpu, float(cpu) / float(dur)))
    extra = {}
    if args.extra:
        for line in open(args.extra):
            k, _, v = line.rstrip("\n").partition(" ")
            extra[k] = v
    labels = {
        "direct": "direct to a backend (the limit)",
        "nginx": "nginx, 10 hosts",
        "haproxy": "HAProxy, 10 hosts",
        "flatnet": "flatnet, 10 hosts",
        "nginx10k": "nginx, 10,000 hosts (host 5,000)",
        "flatnet10k": "flatnet, 10,000 hosts (host 5,000)",
    }
    out = []
    meds = {}
    for proto, title in (("h1", "HTTP/1.1, wrk -c64 -t2 --latency, keep-alive"),
                         ("h2", f"HTTP/2 ({extra.get('h2mode', '?')}), h2load -c64 -m10 -t2")):
        keys = [k for k in labels if (proto, k) in runs]
        if not keys:
            continue
        out.append(f"### {title}")
        out.append("")
        out.append("| target | req/s median | p50 ms | p99 ms | req/s of each run | errors | "
                   "vs nginx (req/s) | vs direct (req/s) | server cores busy | "
                   "req per server CPU-s | vs nginx (per CPU-s) |")
        out.append("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
        for k in keys:
            r = runs[(proto, k)]
            m = (med([x[0] for x in r]), med([x[1] for x in r]), med([x[2] for x in r]),
                 med([x[4] for x in r]), med([x[5] for x in r]))
            meds[(proto, k)] = m
        for k in keys:
            m = meds[(proto, k)]
            r = runs[(proto, k)]
            ng = meds.get((proto, "nginx"), (None,))[0]
            dr = meds.get((proto, "direct"), (None,))[0]
            vs_n = f"{m[0] / ng:.2f}x" if m[0] and ng else "n/a"
            vs_d = f"{m[0] / dr:.2f}x" if m[0] and dr else "n/a"
            each = " ".join(fmt(x[0], 0) for x in r)
            ngc = meds.get((proto, "nginx"), (None,) * 5)[3]
            vs_nc = f"{m[3] / ngc:.2f}x" if m[3] and ngc else "n/a"
            out.append(f"| {labels[k]} | {fmt(m[0], 0)} | {fmt(m[1])} | {fmt(m[2])} | {each} | "
                       f"{sum(x[3] for x in r)} | {vs_n} | {vs_d} | {fmt(m[4])} | {fmt(m[3], 0)} | "
                       f"{vs_nc} |")
        out.append("")
    out.append("(server cores busy: the CPU seconds of the proxy, or of the backend for direct, per"
               " second of the run; req per server CPU-s: requests / those CPU seconds.)")
    out.append("")

    # Route changes and memory.
    def stat(prefix):
        v = extra.get(prefix)
        if not v:
            return None, None, "n/a"
        vals = [None if x == "timeout" else float(x) for x in v.split()]
        ok = [x for x in vals if x is not None]
        if not ok:
            return None, None, v
        return statistics.median(ok), max(ok), v

    out.append("### Route change: rename of a manifest (flatnet) / config write + `nginx -s reload`,"
               " to the first request answered by the new backend")
    out.append("")
    out.append("| proxy, hosts | median ms | max ms | each flip ms |")
    out.append("|---|---:|---:|---|")
    for key, label in (("reroute_flatnet10", "flatnet, 10"), ("reroute_flatnet10k", "flatnet, 10,000"),
                       ("reroute_nginx10", "nginx, 10"), ("reroute_nginx10k", "nginx, 10,000")):
        m, mx, each = stat(key)
        out.append(f"| {label} | {fmt(m, 1)} | {fmt(mx, 1)} | {each} |")
    out.append("")
    out.append("### Memory and start-up")
    out.append("")
    out.append("| what | value |")
    out.append("|---|---|")
    for key, label in (("rss_flatnet10_idle", "flatnet, 10 hosts, VmRSS loaded, before the runs (MiB)"),
                       ("rss_flatnet10_after", "flatnet, 10 hosts, VmRSS after the runs (MiB)"),
                       ("rss_flatnet10k_idle", "flatnet, 10,000 hosts, VmRSS loaded, before the runs (MiB)"),
                       ("rss_flatnet10k_after", "flatnet, 10,000 hosts, VmRSS after the runs (MiB)"),
                       ("rss_flatnet10k_end", "flatnet, 10,000 hosts, VmRSS after the route changes (MiB)"),
                       ("rss_flatnet10k_soak", "flatnet, 10,000 hosts, VmRSS after all route changes (MiB; count below)"),
                       ("mem_flips", "route changes flatnet made at 10,000 hosts in all"),
                       ("rss_nginx10_after", "nginx, 10 hosts, master + workers, sum of Pss, after the runs (MiB)"),
                       ("rss_nginx10k_idle", "nginx, 10,000 hosts, master + workers, sum of Pss, loaded (MiB)"),
                       ("rss_nginx10k_after", "nginx, 10,000 hosts, master + workers, sum of Pss, after the runs (MiB)"),
                       ("rss_haproxy_after", "HAProxy, 10 hosts, VmRSS after the runs (MiB)"),
                       ("start_flatnet10k_ms", "flatnet, 10,000 hosts: start to first answer (ms)"),
                       ("start_nginx10k_ms", "nginx, 10,000 hosts: start to first answer (ms)")):
        out.append(f"| {label} | {extra.get(key, 'n/a')} |")
    out.append("")

    # Targets.
    out.append("### Targets")
    out.append("")
    out.append("| target | result | met |")
    out.append("|---|---|---|")

    def yn(b):
        return "n/a" if b is None else ("yes" if b else "no")
    for proto in ("h1", "h2"):
        f = meds.get((proto, "flatnet"))
        n = meds.get((proto, "nginx"))
        d = meds.get((proto, "direct"))
        if not (f and n and d) or f[0] is None:
            out.append(f"| {proto}: flatnet vs nginx, vs direct | flatnet not measured | n/a |")
            continue
        r = f[0] / n[0]
        out.append(f"| {proto}: req/s >= 1.2x nginx | {r:.2f}x ({f[0]:.0f} vs {n[0]:.0f}) | "
                   f"{yn(r >= 1.2)} |")
        out.append(f"| {proto}: p99 <= nginx's | {f[2]:.2f} vs {n[2]:.2f} ms | {yn(f[2] <= n[2])} |")
        if f[3] and n[3]:
            out.append(f"| {proto}: (diagnostic) requests per proxy CPU-second vs nginx | "
                       f"{f[3] / n[3]:.2f}x ({f[3]:.0f} vs {n[3]:.0f}) | - |")
        rd = f[0] / d[0]
        out.append(f"| {proto}: req/s >= 0.5x direct | {rd:.2f}x ({f[0]:.0f} vs {d[0]:.0f}) | "
                   f"{yn(rd >= 0.5)} |")
    f10 = meds.get(("h1", "flatnet"))
    f10k = meds.get(("h1", "flatnet10k"))
    if f10 and f10k and f10[0] and f10k[0]:
        r = f10k[0] / f10[0]
        out.append(f"| 10,000 hosts: host 5,000 within 5 % of 10 hosts | {r:.3f}x "
                   f"({f10k[0]:.0f} vs {f10[0]:.0f}) | {yn(abs(1 - r) <= 0.05)} |")
    else:
        out.append("| 10,000 hosts: host 5,000 within 5 % of 10 hosts | not measured | n/a |")
    n10 = meds.get(("h1", "nginx"))
    n10k = meds.get(("h1", "nginx10k"))
    if n10 and n10k and n10[0] and n10k[0]:
        out.append(f"| (reference) nginx: host 5,000 of 10,000 vs 10 hosts | {n10k[0] / n10[0]:.3f}x "
                   f"({n10k[0]:.0f} vs {n10[0]:.0f}) | - |")
    m, mx, _ = stat("reroute_flatnet10k")
    out.append(f"| route change at 10,000 hosts < 100 ms | median {fmt(m, 1)}, max {fmt(mx, 1)} ms | "
               f"{yn(None if mx is None else mx < 100)} |")
    rss = extra.get("rss_flatnet10k_after")
    rss_ok = None
    try:
        vals = [float(extra[k]) for k in ("rss_flatnet10k_idle", "rss_flatnet10k_after",
                                          "rss_flatnet10k_end", "rss_flatnet10k_soak")
                if k in extra]
        rss_ok = max(vals) < 100 * 1e6 / 1048576
    except (KeyError, ValueError, TypeError):
        pass
    out.append(f"| RSS at 10,000 hosts < 100 MB (95.4 MiB) | {extra.get('rss_flatnet10k_idle', 'n/a')}"
               f" MiB loaded, {rss or 'n/a'} MiB after the runs, "
               f"{extra.get('rss_flatnet10k_end', 'n/a')} MiB after {extra.get('flips', '?')} route "
               f"changes, {extra.get('rss_flatnet10k_soak', 'n/a')} MiB after "
               f"{extra.get('mem_flips', '?')} | {yn(rss_ok)} |")
    out.append("")
    print("\n".join(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("dir")
    for name in ("b1", "b2", "bnew", "bh2", "btls", "nginx_http", "nginx_h2c", "nginx_tls",
                 "nginx_large", "haproxy_http", "haproxy_h2c", "haproxy_tls"):
        g.add_argument("--" + name.replace("_", "-"), type=int, required=True)
    g.add_argument("--hosts-small", type=int, default=10)
    g.add_argument("--hosts-large", type=int, default=10000)
    g.add_argument("--proxy-workers", type=int, default=2)
    g.add_argument("--backend-workers", type=int, default=2)
    w = sub.add_parser("wrk")
    w.add_argument("file")
    h = sub.add_parser("h2")
    h.add_argument("file")
    h.add_argument("log")
    r = sub.add_parser("reroute")
    r.add_argument("--kind", choices=["flatnet", "nginx"], required=True)
    r.add_argument("--conf", required=True, help="manifest folder / nginx servers folder")
    r.add_argument("--stage", required=True, help="folder for the new file (same filesystem)")
    r.add_argument("--nhosts", type=int, required=True)
    r.add_argument("--host", type=int, required=True)
    r.add_argument("--port", type=int, required=True, help="where to send the probes")
    r.add_argument("--nginx-port", type=int, default=0, help="listen port in server blocks")
    r.add_argument("--nginx-conf", default="")
    r.add_argument("--nginx-h2c", type=int, default=0, help="h2c listen port in server blocks")
    r.add_argument("--nginx-tls", type=int, default=0, help="TLS listen port in server blocks")
    r.add_argument("--tmp", default="", help="folder of tls.crt / tls.key (nginx TLS)")
    r.add_argument("--tls-secret", default="", help="flatnet: spec.tls secret of the Ingresses")
    r.add_argument("--flips", type=int, default=6)
    r.add_argument("--every", type=float, default=5.0, help="ms between probes")
    r.add_argument("--deadline", type=float, default=10.0, help="s per flip")
    r.add_argument("--pause", type=float, default=1.0, help="s between flips")
    rp = sub.add_parser("report")
    rp.add_argument("results")
    rp.add_argument("--extra")
    a = ap.parse_args()
    if a.cmd == "gen":
        gen(a)
    elif a.cmd == "wrk":
        rps, p50, p99, err = parse_wrk(a.file)
        print(fmt(rps), fmt(p50, 3), fmt(p99, 3), err)
    elif a.cmd == "h2":
        rps, p50, p99, err = parse_h2(a.file, a.log)
        print(fmt(rps), fmt(p50, 3), fmt(p99, 3), err)
    elif a.cmd == "reroute":
        reroute(a)
    elif a.cmd == "report":
        report(a)


if __name__ == "__main__":
    sys.exit(main())
