"""A Python checkpoint target speaking the FIFO protocol of tests/targets (see memtest.c).

Holds 32 MiB of pseudo-random bytes and two threads that keep rewriting and verifying their own
buffers; answers CHECK on DIR/cmd with one REPORT line on DIR/report.
"""
import hashlib
import os
import random
import sys
import threading
import time

directory = sys.argv[1]
data = [random.Random(i).randbytes(4 << 20) for i in range(8)]
hashes = [hashlib.sha256(d).digest() for d in data]
errors = 0
iterations = 0
lock = threading.Lock()


def worker(ident):
    global errors, iterations
    gen = 0
    mine = bytearray(random.Random(1000 + ident).randbytes(1 << 20))
    while True:
        if bytes(mine) != random.Random(1000 + ident + gen).randbytes(1 << 20):
            with lock:
                errors += 1
        gen += 1
        mine[:] = random.Random(1000 + ident + gen).randbytes(1 << 20)
        with lock:
            iterations += 1
        time.sleep(0.002)


for ident in range(2):
    threading.Thread(target=worker, args=(ident,), daemon=True).start()

report = os.open(os.path.join(directory, "report"), os.O_WRONLY)
os.write(report, f"READY {os.getpid()}\n".encode())
with open(os.path.join(directory, "cmd"), "r") as cmd:
    for line in cmd:
        if line.startswith("CHECK"):
            bad = "none"
            for i, d in enumerate(data):
                if hashlib.sha256(d).digest() != hashes[i]:
                    bad = f"array{i}"
            before = iterations
            while iterations < before + 3:
                time.sleep(0.001)
            ok = bad == "none" and errors == 0
            os.write(report, f"REPORT ok={int(ok)} bad={bad} worker_errors={errors} iterations={iterations}\n".encode())
        elif line.strip() == "EXIT":
            break
