# Written by `cargo xtask bench`: N chat-completion POSTs over one keep-alive HTTPS connection,
# with Python's http.client (the interpreter's `ssl` module: the system libssl, which the tracer
# hooks). Standard library only.
#
# Usage: python3 tls_client.py PORT CERT_PEM N WARMUP
# Waits for one line (or EOF) on stdin before the first request, then prints one JSON line:
# {"requests": N, "seconds": ..., "p50_us": ..., "p99_us": ..., "rps": ..., "connections": 1}
import http.client
import json
import math
import ssl
import sys
import time

port, cert, n, warmup = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ctx = ssl.create_default_context(cafile=cert)
conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
connections = 0
connect = conn.connect


def counting_connect():
    global connections
    connections += 1
    connect()


conn.connect = counting_connect
body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
# http.client sends "Accept-Encoding: identity" by itself, so the answer is never gzipped.
headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench-not-a-secret"}


def once():
    conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        sys.exit(f"HTTP {resp.status}: {data[:200]!r}")


sys.stdin.readline()
for _ in range(warmup):
    once()
latencies = []
start = time.perf_counter_ns()
for _ in range(n):
    t = time.perf_counter_ns()
    once()
    latencies.append(time.perf_counter_ns() - t)
total = (time.perf_counter_ns() - start) / 1e9
conn.close()
latencies.sort()


def percentile(p):
    return latencies[min(len(latencies) - 1, max(0, math.ceil(p / 100 * len(latencies)) - 1))] / 1000


print(json.dumps({"requests": n, "seconds": total, "p50_us": percentile(50),
                  "p99_us": percentile(99), "rps": n / total, "connections": connections}),
      flush=True)
