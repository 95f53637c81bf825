#!/usr/bin/env python3
# The lab's TCP/UDP ends for test_filter.sh.
#   filter_peer.py serve LOG TCPPORT,... UDPPORT,...: listen on every address (IPv4 and
#     IPv6), answer "ok" to each TCP connection and UDP datagram, append "tcp PORT SRC" or
#     "udp PORT SRC" to LOG for each.
#   filter_peer.py tcp HOST PORT SECS: connect, send, expect "ok"; exit 0 if it came.
#   filter_peer.py udp HOST PORT SECS: send a datagram, expect "ok"; exit 0 if it came.
import selectors
import socket
import sys


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
            if kind == "tcp":
                c, addr = key.fileobj.accept()
                c.sendall(b"ok")
                c.close()
            else:
                _, addr = key.fileobj.recvfrom(2048)
                key.fileobj.sendto(b"ok", addr)
            with open(log, "a") as f:
                f.write("%s %d %s\n" % (kind, port, addr[0]))


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


if sys.argv[1] == "serve":
    ports = lambda a: [int(x) for x in a.split(",") if x]
    serve(sys.argv[2], ports(sys.argv[3]), ports(sys.argv[4]))
else:
    sys.exit(0 if client(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])) else 1)
