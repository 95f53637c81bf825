#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/smaps_breakdown.py's classification on made-up mappings: a malloc arena is a
glibc heap at a 64 MiB boundary; an rw mapping that merely sits before a PROT_NONE one
(a large allocation below a thread stack's guard page) is "anon".

    smaps_breakdown_test.py [BENCH_DIR]
"""
import os
import sys

sys.path.insert(0, sys.argv[1] if len(sys.argv) > 1 else
                os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
import smaps_breakdown  # noqa: E402

MIB = 1 << 20
KIB = 1 << 10


def m(lo, size, perms, path=""):
    return {"lo": lo, "hi": lo + size, "perms": perms, "path": path, "rss": 0}


HEAP = 0x7f0000000000  # a multiple of 64 MiB
STACK = 0x7f1000123000  # not
maps = [
    m(0x555555554000, 64 * KIB, "r-xp", "/usr/sbin/trellisd"),
    m(0x555555600000, 1 * MIB, "rw-p", "[heap]"),
    # a thread's arena: 1 MiB in use, the reserve up to 64 MiB
    m(HEAP, 1 * MIB, "rw-p"),
    m(HEAP + 1 * MIB, 63 * MIB, "---p"),
    # an arena grown to the whole 64 MiB
    m(HEAP + 64 * MIB, 64 * MIB, "rw-p"),
    # a 780 KiB calloc'd table just below a thread stack's guard page
    m(STACK - 780 * KIB, 780 * KIB, "rw-p"),
    m(STACK, 4 * KIB, "---p"),
    m(STACK + 4 * KIB, 8 * MIB, "rw-p"),
    # 64 MiB-aligned but its PROT_NONE neighbour runs past the boundary: not a glibc heap
    m(HEAP + 128 * MIB, 1 * MIB, "rw-p"),
    m(HEAP + 129 * MIB, 127 * MIB, "---p"),
    m(0x7fff00000000, 132 * KIB, "rw-p", "[stack]"),
]
want = ["exe", "heap", "arenas", "anon", "arenas", "anon", "anon", "tstacks", "anon", "anon",
        "stack"]
got = list(smaps_breakdown.classify(maps, [STACK + 8 * MIB - 64], "/usr/sbin/trellisd"))
bad = [(i, w, g) for i, (w, g) in enumerate(zip(want, got)) if w != g]
for i, w, g in bad:
    print(f"mapping {i} ({maps[i]['lo']:#x}, {maps[i]['perms']}): want {w}, got {g}")
print("ok" if not bad else "FAIL")
sys.exit(1 if bad else 0)
