# Written by `cargo xtask bench --soak`: the HTTPS loop's chat-completion POSTs over one
# keep-alive HTTPS connection (Python's http.client, the system libssl the tracer hooks), as
# fast as they go, for SECONDS. Keeps no per-request numbers: memory stays flat however long.
#
# Usage: python3 soak_client.py PORT CERT_PEM SECONDS
# Prints one JSON line: {"requests": N, "seconds": ..., "connections": 1}
import http.client
import json
import ssl
import sys
import time

port, cert, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
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
headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench-not-a-secret"}
requests = 0
start = time.monotonic()
deadline = start + seconds
while time.monotonic() < deadline:
    conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        sys.exit(f"HTTP {resp.status}: {data[:200]!r}")
    requests += 1
conn.close()
print(json.dumps({"requests": requests, "seconds": time.monotonic() - start,
                  "connections": connections}), flush=True)
