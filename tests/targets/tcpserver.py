"""An HTTP server for the CRIU-mode socket tests: python3 tcpserver.py PORT.

GET /quick     answers at once: "quick"
GET /slow      answers after 10 s: "Done after checkpoint!" (as the fixture's webserver.py)
GET /big       answers 32 MiB: bytes 0..255 repeated, written with one sendall
GET /ticks     streams a line every 10 ms for 10 minutes
POST /         reads the body 64 KiB at a time, 50 ms apart, and answers its sha256 in hex

Prints "ready PID" once it listens.
"""
import hashlib
import http.server
import os
import sys
import time


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def answer(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/quick":
            self.answer(b"quick")
        elif self.path == "/slow":
            time.sleep(10)
            self.answer(b"Done after checkpoint!")
        elif self.path == "/big":
            self.answer(bytes(range(256)) * (128 << 10))
        elif self.path == "/ticks":
            self.send_response(200)
            self.end_headers()
            for n in range(60000):
                self.wfile.write(f"tick {n}\n".encode())
                time.sleep(0.01)
        else:
            self.send_error(404)

    def do_POST(self):
        left = int(self.headers["Content-Length"])
        digest = hashlib.sha256()
        while left > 0:
            chunk = self.rfile.read(min(65536, left))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
            time.sleep(0.05)
        self.answer(digest.hexdigest().encode())


server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
print(f"ready {os.getpid()}", flush=True)
server.serve_forever()
