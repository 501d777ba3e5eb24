"""A plain client on Python's standard library (http.client over the system OpenSSL for https),
used by the capture tests.

usage: http_post.py URL [--size BYTES] [--repeat N] [--wait-stdin] [--model M]
  --size       total JSON body size in bytes (padded with 'x'), default small
  --repeat     requests on the same keep-alive connection
  --wait-stdin before each request after the first, wait for a line on stdin
Prints one JSON line per request: pid, status, the request body's length, the response body.
"""
import argparse
import http.client
import json
import os
import ssl
import sys
import urllib.parse

parser = argparse.ArgumentParser()
parser.add_argument("url")
parser.add_argument("--size", type=int, default=0)
parser.add_argument("--repeat", type=int, default=1)
parser.add_argument("--wait-stdin", action="store_true")
parser.add_argument("--model", default="gpt-4o-mini")
args = parser.parse_args()

url = urllib.parse.urlsplit(args.url)
if url.scheme == "https":
    context = ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE"))
    conn = http.client.HTTPSConnection(url.hostname, url.port, context=context, timeout=120)
else:
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)


def body_of(size):
    empty = json.dumps({"model": args.model, "messages": [{"role": "user", "content": ""}]})
    pad = max(0, size - len(empty))
    return json.dumps({"model": args.model, "messages": [{"role": "user", "content": "x" * pad}]}).encode()


for i in range(args.repeat):
    if i > 0 and args.wait_stdin:
        if not sys.stdin.readline():
            break
    body = body_of(args.size)
    conn.request("POST", url.path, body=body, headers={"content-type": "application/json",
                                                        "authorization": "Bearer sk-py-secret"})
    response = conn.getresponse()
    text = response.read().decode()
    print(json.dumps({"pid": os.getpid(), "status": response.status, "request_len": len(body), "body": text}),
          flush=True)
