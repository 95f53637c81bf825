#!/usr/bin/env python3
# The lab's TCP/UDP ends for test_filter.sh.
#   filter_peer.py serve LOG TCPPORT,... UDPPORT,...: listen on every address (IPv4 and
#     IPv6), answer "ok" to each TCP connection and UDP datagram, append "tcp PORT SRC" or
#     "udp PORT SRC" to LOG for each. A TCP connection stays open while its client keeps
#     it: each line it sends is echoed back.
#   filter_peer.py stream HOST PORT STATE STOP: one long-lived TCP connection: after the "ok",
#     a line "seq N" every 100 ms, each echo checked (in order, none missing); STATE (JSON,
#     rewritten as it goes) says how many were sent and echoed, the longest wait between
#     two echoes (and when it ended) and the error that ended it (a reset, the connection closed, an echo out
#     of order). When the file STOP appears: waits for the last echoes (10 s at most), exit
#     0 if every line came back and nothing went wrong.
#   filter_peer.py tcp HOST PORT SECS: connect, send, expect "ok"; exit 0 if it came.
#   filter_peer.py udp HOST PORT SECS: send a datagram, expect "ok"; exit 0 if it came.
#   filter_peer.py refused tcp|udp HOST PORT SECS: exit 0 if the attempt fails with an error
#     the network sent back (a RST: ECONNREFUSED; ICMP unreachable: EHOSTUNREACH, EACCES)
#     within SECS; 1 if it succeeds or times out. Prints the error and the time it took.
import errno
import json
import os
import selectors
import socket
import sys
import time


def serve(log, tcp_ports, udp_ports):
    sel = selectors.DefaultSelector()
    for fam, any_addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        for p in tcp_ports:
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((any_addr, p))
            s.listen(16)
            sel.register(s, selectors.EVENT_READ, ("tcp", p))
        for p in udp_ports:
            s = socket.socket(fam, socket.SOCK_DGRAM)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((any_addr, p))
            sel.register(s, selectors.EVENT_READ, ("udp", p))
    while True:
        for key, _ in sel.select():
            kind, port = key.data
            if kind == "conn":
                echo(sel, key.fileobj)
                continue
            if kind == "tcp":
                c, addr = key.fileobj.accept()
                c.sendall(b"ok")
                # Kept for the lines a long-lived client sends; the others just close.
                sel.register(c, selectors.EVENT_READ, ("conn", port))
            else:
                _, addr = key.fileobj.recvfrom(2048)
                key.fileobj.sendto(b"ok", addr)
            with open(log, "a") as f:
                f.write("%s %d %s\n" % (kind, port, addr[0]))


def echo(sel, c):
    try:
        data = c.recv(4096)
        if data:
            c.sendall(data)
            return
    except OSError:
        pass
    sel.unregister(c)
    c.close()


def stream(host, port, state, stop):
    # max_gap_end: when the longest wait ended (UTC, as the daemons' logs stamp it).
    st = {"sent": 0, "echoed": 0, "max_gap_ms": 0, "max_gap_end": None, "error": None}

    def save():
        with open(state + ".tmp", "w") as f:
            json.dump(st, f)
        os.replace(state + ".tmp", state)

    buf, last = b"", time.monotonic()
    try:
        s = socket.create_connection((host, port), timeout=10)
        if s.recv(2) != b"ok":
            raise OSError("no ok")
        s.settimeout(0.1)
        stop_at = None
        next_send = time.monotonic()
        while True:
            now = time.monotonic()
            if stop_at is None and os.path.exists(stop):
                stop_at = now + 10
            if stop_at is not None and (st["echoed"] == st["sent"] or now > stop_at):
                break
            if stop_at is None and now >= next_send:
                s.sendall(b"seq %d\n" % st["sent"])
                st["sent"] += 1
                next_send += 0.1
            try:
                data = s.recv(4096)
                if not data:
                    raise OSError("the server closed the connection")
                buf += data
            except socket.timeout:
                pass
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line != b"seq %d" % st["echoed"]:
                    raise OSError("echo %r, expected seq %d" % (line, st["echoed"]))
                st["echoed"] += 1
                now = time.monotonic()
                if int((now - last) * 1000) > st["max_gap_ms"]:
                    st["max_gap_ms"] = int((now - last) * 1000)
                    t = time.time()
                    st["max_gap_end"] = time.strftime("%H:%M:%S", time.gmtime(t)) + \
                        ("%.3f" % (t % 1))[1:]
                last = now
            save()
    except OSError as e:
        st["error"] = errno.errorcode.get(e.errno, str(e)) if e.errno else str(e)
    save()
    print(json.dumps(st))
    return st["error"] is None and st["echoed"] == st["sent"] > 0


def client(kind, host, port, secs):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        if kind == "tcp":
            s = socket.create_connection((host, port), timeout=secs)
            s.settimeout(secs)
            return s.recv(2) == b"ok"
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.settimeout(secs)
        s.sendto(b"hi", (host, port))
        return s.recv(2) == b"ok"
    except OSError:
        return False


def refused(kind, host, port, secs):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    t0 = time.monotonic()
    try:
        if kind == "tcp":
            s = socket.create_connection((host, port), timeout=secs)
        else:
            # Connected: the kernel reports an ICMP error for the flow on the next call.
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.settimeout(secs)
            s.connect((host, port))
            s.send(b"hi")
            s.recv(2)
        print("%s %s:%d: answered" % (kind, host, port))
        return False
    except OSError as e:
        ms = (time.monotonic() - t0) * 1000
        name = errno.errorcode.get(e.errno, str(e))
        print("%s %s:%d: %s after %.0f ms" % (kind, host, port, name, ms))
        return e.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.EACCES)


if sys.argv[1] == "refused":
    sys.exit(0 if refused(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])) else 1)
elif sys.argv[1] == "stream":
    sys.exit(0 if stream(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]) else 1)
elif sys.argv[1] == "serve":
    ports = lambda a: [int(x) for x in a.split(",") if x]
    serve(sys.argv[2], ports(sys.argv[3]), ports(sys.argv[4]))
else:
    sys.exit(0 if client(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])) else 1)
