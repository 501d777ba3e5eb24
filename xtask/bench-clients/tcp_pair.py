# Written by `cargo xtask bench`: SENDS small sends through one TCP connection on 127.0.0.1, from a
# forked child to this process, whose first bytes are not HTTP (nor TLS).
#
# Usage: python3 tcp_pair.py SENDS
# Prints one JSON line: {"sends": ..., "recvs": ..., "bytes": ..., "seconds": ..., "cpu": N};
# seconds runs from the fork to the end of the stream (the child's exit included). Both processes
# run on one CPU (the last one allowed): on a small machine, where the two sides land otherwise
# varies from run to run, and so does the time.
import json
import os
import socket
import sys
import time

sends = int(sys.argv[1])
# 16 bytes that are neither an HTTP method nor a TLS record header.
msg = b"\x00bench-not-http\n"
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.bind(("127.0.0.1", 0))
listener.listen(1)
port = listener.getsockname()[1]

cpu = max(os.sched_getaffinity(0))
os.sched_setaffinity(0, {cpu})
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    code = 1
    try:
        listener.close()
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        send = s.send
        for _ in range(sends):
            if send(msg) != len(msg):
                raise SystemExit("short send")
        s.close()
        code = 0
    finally:
        os._exit(code)

listener.settimeout(30)
conn, _ = listener.accept()
conn.settimeout(30)
recv = conn.recv
recvs = 0
total = 0
while True:
    data = recv(len(msg))
    if not data:
        break
    recvs += 1
    total += len(data)
_, status = os.waitpid(pid, 0)
seconds = time.perf_counter() - start
conn.close()
if status != 0 or total != sends * len(msg):
    sys.exit(f"sender failed (wait status {status}) or bytes missing: {total} of {sends * len(msg)}")
print(json.dumps({"sends": sends, "recvs": recvs, "bytes": total, "seconds": seconds, "cpu": cpu}),
      flush=True)
