"""A plain HTTP client whose response lands nowhere the kernel programs can read: it sends a
request, then takes the response with recv(MSG_TRUNC) into an address no process can map. On a
TCP socket MSG_TRUNC discards the bytes without copying them, so the call succeeds and reports
their count, and the tracer's copy of "what was received" at that address fails: the rare
error path a real program can take, made certain.

usage: recv_unreadable.py PORT
Prints one JSON line: pid, and the byte count recv returned.
"""
import ctypes
import json
import os
import socket
import sys

# Below vm.mmap_min_addr (64 KiB by default, never below 4 KiB): never mapped, yet a user
# address, so recv's own check of the pointer lets it through.
UNMAPPED = 0x1000

port = int(sys.argv[1])
sock = socket.create_connection(("127.0.0.1", port))
sock.sendall(b"GET /unreadable HTTP/1.1\r\nHost: localhost\r\n\r\n")
libc = ctypes.CDLL(None, use_errno=True)
libc.recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.recv.restype = ctypes.c_ssize_t
received = libc.recv(sock.fileno(), UNMAPPED, 4096, socket.MSG_TRUNC)
if received <= 0:
    sys.exit(f"recv returned {received}, errno {ctypes.get_errno()}")
sock.close()
print(json.dumps({"pid": os.getpid(), "received": received}), flush=True)
