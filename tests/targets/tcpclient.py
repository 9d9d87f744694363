"""A TCP client for the CRIU-mode socket tests: python3 tcpclient.py PORT.

Connects to 127.0.0.1:PORT, then every 100 ms sends "ping N" and reads the answer line,
printing it (the server answers "pong N"). Prints "connected PID LOCALPORT" first; exits 3 if
an answer does not match.
"""
import os
import socket
import sys
import time

s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
print(f"connected {os.getpid()} {s.getsockname()[1]}", flush=True)
reader = s.makefile("r")
n = 0
while True:
    n += 1
    s.sendall(f"ping {n}\n".encode())
    line = reader.readline().strip()
    print(line, flush=True)
    if line != f"pong {n}":
        sys.exit(3)
    time.sleep(0.1)
