"""UNIX sockets of every kind CRIU's images hold, for a dump and restore to keep.

  unixsockets.py tree            two processes holding socketpairs (stream, datagram, seqpacket),
                                 a listener on a path with a connection, datagram sockets on an
                                 abstract and a relative name, queued messages, descriptors in
                                 flight, a half-closed pair and a shut-down one
  unixsockets.py ext-dgram PATH  a datagram socket connected to PATH (a socket outside the tree)
  unixsockets.py ext-stream PATH a stream connection to PATH
  unixsockets.py pending         a listener with a connection it has not accepted yet
  unixsockets.py passcred        a message queued on a socket with SO_PASSCRED (its credentials)

Everything is set up, "ready CHILD" is printed, and the program waits for a file named "go" in
its directory. Then it checks that every socket still holds what it held, prints "ok NAME" or
"FAIL NAME: why" for each, and "all-ok" when nothing failed; the tree mode then echoes one
connection on l.sock ("echo:" and what it got).
"""
import os
import socket
import sys
import time

U, STREAM, DGRAM, SEQ = socket.AF_UNIX, socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET
HERE = os.getcwd()
ABSTRACT = b"\0memcr-test-" + str(os.getpid()).encode()
failed = []


def say(line):
    print(line, flush=True)


def check(name, got, want):
    if got == want:
        say(f"ok {name}")
    else:
        failed.append(name)
        say(f"FAIL {name}: got {got!r}, want {want!r}")


def wait_go():
    while not os.path.exists(os.path.join(HERE, "go")):
        time.sleep(0.05)


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def tree():
    s1a, s1b = socket.socketpair(U, STREAM)
    s1a.send(b"to-b-1")
    s1a.send(b"to-b-2")
    s1b.send(b"to-a")

    d2a, d2b = socket.socketpair(U, DGRAM)
    for i in range(3):
        d2a.send(b"dgram-%d" % i)

    q3a, q3b = socket.socketpair(U, SEQ)

    lpath = os.path.join(HERE, "l.sock")
    lst = socket.socket(U, STREAM)
    lst.bind(lpath)
    os.chmod(lpath, 0o600)
    lst.listen(8)
    cli = socket.socket(U, STREAM)
    cli.connect(lpath)
    srv, _ = lst.accept()
    cli.send(b"request-before")
    srv.send(b"reply-before")

    dsrv = socket.socket(U, DGRAM)
    dsrv.bind(ABSTRACT + b"-dgram")
    dsnd = socket.socket(U, DGRAM)
    dsnd.connect(ABSTRACT + b"-dgram")
    dsnd.send(b"log-1")
    dsnd.send(b"log-2")

    r, w = os.pipe()
    os.write(w, b"piped")
    with open("passed.txt", "w") as f:
        f.write("file-content")
    f = open("passed.txt", "r")
    p6a, p6b = socket.socketpair(U, STREAM)
    socket.send_fds(p6a, [b"fds"], [r, f.fileno()])
    os.close(r)
    f.close()

    sql = socket.socket(U, SEQ)
    sql.bind(ABSTRACT + b"-seq")
    sql.listen(4)

    rel = socket.socket(U, DGRAM)
    rel.bind("rel.sock")
    rsnd = socket.socket(U, DGRAM)
    rsnd.sendto(b"rel-msg", os.path.join(HERE, "rel.sock"))
    os.mkdir("sub")
    os.chdir("sub")

    h9a, h9b = socket.socketpair(U, STREAM)
    h9a.send(b"last-words")
    h9a.close()

    s10a, s10b = socket.socketpair(U, STREAM)
    s10a.shutdown(socket.SHUT_WR)

    child = os.fork()
    if child == 0:
        q3b.send(b"child-1")
        q3b.send(b"child-2")
        wait_go()
        while True:
            m = q3b.recv(100)
            if not m or m == b"bye":
                os._exit(0)
            q3b.send(b"pong:" + m)

    say(f"ready {child}")
    wait_go()

    check("stream-pair-a-to-b", recv_exactly(s1b, 12), b"to-b-1to-b-2")
    check("stream-pair-b-to-a", recv_exactly(s1a, 4), b"to-a")
    s1a.send(b"x")
    check("stream-pair-after", s1b.recv(10), b"x")

    check("dgram-pair", [d2b.recv(100) for _ in range(3)], [b"dgram-0", b"dgram-1", b"dgram-2"])
    d2b.setblocking(False)
    try:
        extra = d2b.recv(100)
    except BlockingIOError:
        extra = None
    check("dgram-pair-nothing-more", extra, None)

    check("seqpacket-across-fork", [q3a.recv(100), q3a.recv(100)], [b"child-1", b"child-2"])
    q3a.send(b"ping")
    check("seqpacket-child-answers", q3a.recv(100), b"pong:ping")
    q3a.send(b"bye")

    check("accepted-queue", srv.recv(100), b"request-before")
    check("client-queue", cli.recv(100), b"reply-before")
    cli.send(b"after")
    check("connection-after", srv.recv(100), b"after")
    check("listener-mode", oct(os.stat(lpath).st_mode & 0o777), oct(0o600))

    check("abstract-dgram-queue", [dsrv.recv(100), dsrv.recv(100)], [b"log-1", b"log-2"])
    dsnd.send(b"log-3")
    check("abstract-dgram-after", dsrv.recv(100), b"log-3")
    check("abstract-dgram-peer", dsnd.getpeername(), ABSTRACT + b"-dgram")

    msg, fds, _, _ = socket.recv_fds(p6b, 100, 4)
    check("passed-message", msg, b"fds")
    check("passed-count", len(fds), 2)
    if len(fds) == 2:
        check("passed-pipe", os.read(fds[0], 100), b"piped")
        check("passed-file", os.read(fds[1], 100), b"file-content")

    c = socket.socket(U, SEQ)
    c.connect(ABSTRACT + b"-seq")
    a, _ = sql.accept()
    c.send(b"seq-new")
    check("abstract-seqpacket-listener", a.recv(100), b"seq-new")

    check("relative-name", rel.getsockname(), "rel.sock")
    check("relative-queue", rel.recv(100), b"rel-msg")

    check("half-closed-data", h9b.recv(100), b"last-words")
    check("half-closed-eof", h9b.recv(100), b"")

    check("shut-down-eof", s10b.recv(100), b"")
    s10b.send(b"back")
    check("shut-down-other-way", s10a.recv(100), b"back")

    _, status = os.waitpid(child, 0)
    check("child-exit", status, 0)
    say("all-ok" if not failed else f"failed: {' '.join(failed)}")

    conn, _ = lst.accept()
    conn.send(b"echo:" + conn.recv(100))
    conn.close()


def ext(kind, path):
    s = socket.socket(U, DGRAM if kind == "ext-dgram" else STREAM)
    s.connect(path)
    s.send(b"before")
    say("ready 0")
    wait_go()
    s.send(b"after")
    say("all-ok")


def pending():
    lst = socket.socket(U, STREAM)
    lst.bind(ABSTRACT + b"-pending")
    lst.listen(4)
    cli = socket.socket(U, STREAM)
    cli.connect(ABSTRACT + b"-pending")
    cli.send(b"waiting")
    say("ready 0")
    wait_go()
    conn, _ = lst.accept()
    check("pending-accepted", conn.recv(100), b"waiting")
    say("all-ok" if not failed else "failed:")


def passcred():
    a, b = socket.socketpair(U, DGRAM)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    a.send(b"with-credentials")
    say("ready 0")
    wait_go()
    check("passcred-message", b.recv(100), b"with-credentials")
    say("all-ok" if not failed else "failed:")


if __name__ == "__main__":
    if sys.argv[1] == "tree":
        tree()
    elif sys.argv[1] in ("pending", "passcred"):
        globals()[sys.argv[1]]()
    else:
        ext(sys.argv[1], sys.argv[2])
