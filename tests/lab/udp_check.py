#!/usr/bin/env python3
# UDP datagrams through a tunnel, each checked on arrival (test_interop.sh).
#   udp_check.py recv ADDR PORT PLAN SIZE READY PROGRESS: bind ADDR:PORT (an ordinary socket,
#     without UDP_GRO, so a coalesced write must reach it cut back into its datagrams), touch
#     READY, then expect the plan's datagrams one per recv, in order, each of its own length and
#     content; after each drained burst PROGRESS says how many came. Prints "ok N", or "FAIL"
#     and the first datagram that was wrong, missing or extra; exit 0 only on "ok".
#   udp_check.py send ADDR PORT PLAN SIZE PROGRESS: send the plan's bursts, each (where its
#     sizes allow: equal but for a shorter last) as one UDP_SEGMENT send, so that the tunnel
#     carries it as one batch; before the next burst, wait until PROGRESS has seen this one
#     (so no socket buffer on the way has to hold more than a burst).
# PLAN: "fixed" (4 bursts of 40 datagrams of SIZE), "mixed" (runs of other sizes, a shorter
# last, a bigger one after smaller ones, single bytes) or "frag" (SIZE above the tunnel's MTU,
# so each datagram crosses as IP fragments, and larger ones up to seven fragments; sent one by
# one, as UDP_SEGMENT takes no segment above the MTU). Datagram i of size n is the first n
# bytes of (i, n) packed and a pattern of i: a datagram cut wrong, merged or reordered shows.
import os
import select
import socket
import struct
import sys
import time

SOL_UDP = 17
UDP_SEGMENT = 103
SO_RCVBUFFORCE = 33  # not in Python's socket module
WAIT = 10  # seconds the sender waits for each burst to arrive, the receiver for the next


def plan(kind, size):
    if kind == "fixed":
        return [[size] * 40 for _ in range(4)]
    if kind == "frag":
        return [[size] * 40, [size] * 40, [size + 100, size + 7, 1900, 3000, 9000], [size] * 10 + [500]]
    return [
        [size] * 40,
        [size] * 10 + [500],
        [300] * 20,
        [size],
        [7, 7, 7, 1],
        [size, 600, size, 600],
        [size] * 5 + [size - 1],
        [size - 1] + [size] * 3,
        [1] * 8,
    ]


def datagram(i, n):
    return (struct.pack("!IH", i, n) + bytes((i * 31 + k) & 0xFF for k in range(n)))[:n]


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def write_progress(path, n):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % n)
    os.replace(tmp, path)


def read_progress(path):
    try:
        with open(path) as f:
            return int(f.read() or 0)
    except (OSError, ValueError):
        return 0


def recv(addr, port, kind, size, ready, progress):
    sizes = [n for burst in plan(kind, size) for n in burst]
    s = socket.socket(family(addr), socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)
    s.bind((addr, port))
    s.setblocking(False)
    write_progress(progress, 0)
    open(ready, "w").close()
    got = 0
    while got < len(sizes):
        if not select.select([s], [], [], WAIT)[0]:
            print("FAIL: %d of %d datagrams came" % (got, len(sizes)))
            return 1
        while True:
            try:
                data = s.recv(65536)
            except BlockingIOError:
                break
            if got >= len(sizes):
                print("FAIL: an extra datagram of %d bytes" % len(data))
                return 1
            want = datagram(got, sizes[got])
            if data != want:
                head = struct.unpack("!IH", data[:6]) if len(data) >= 6 else data
                print("FAIL: datagram %d: %d bytes (%s), want %d" % (got, len(data), head, len(want)))
                return 1
            got += 1
        write_progress(progress, got)
    # Nothing more may follow (a datagram sent twice, or cut into more than were sent).
    if select.select([s], [], [], 0.5)[0]:
        print("FAIL: an extra datagram after the last")
        return 1
    print("ok %d" % got)
    return 0


def send(addr, port, kind, size, progress):
    s = socket.socket(family(addr), socket.SOCK_DGRAM)
    s.connect((addr, port))
    i = 0
    for burst in plan(kind, size):
        first = i
        if (
            kind != "frag"
            and len(burst) > 1
            and all(n == burst[0] for n in burst[:-1])
            and burst[-1] <= burst[0]
        ):
            buf = b"".join(datagram(first + k, n) for k, n in enumerate(burst))
            s.sendmsg([buf], [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", burst[0]))])
        else:
            for k, n in enumerate(burst):
                s.send(datagram(first + k, n))
        i += len(burst)
        end = time.monotonic() + WAIT
        while read_progress(progress) < i:
            if time.monotonic() > end:
                print("FAIL: the receiver has %d of %d" % (read_progress(progress), i))
                return 1
            time.sleep(0.005)
    print("sent %d" % i)
    return 0


def main(argv):
    if len(argv) == 7 and argv[0] == "recv":
        return recv(argv[1], int(argv[2]), argv[3], int(argv[4]), argv[5], argv[6])
    if len(argv) == 6 and argv[0] == "send":
        return send(argv[1], int(argv[2]), argv[3], int(argv[4]), argv[5])
    print(__doc__ or "usage: see the comment at the top", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
