#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Where a process's resident memory is: /proc/PID/smaps, one line per part, in KiB.

    smaps_breakdown.py PID

Prints `part KiB` lines (the parts add up to the Rss sum, which is VmRSS), then
`map SIZE_KIB RSS_KIB PERMS` for the anonymous mappings with the most resident memory.
Thread stacks are found by each thread's stack pointer (/proc/PID/task/TID/syscall, as
root), so they are told apart from malloc's per-thread arenas, which sit in the same kind
of anonymous mapping. Parts:

  exe        the program's own file (code, read-only data, data)
  libcrypto  OpenSSL's libcrypto and libssl
  libc       libc, libm, ld.so
  libs       every other file (shared libraries, locale archive)
  heap       [heap]: the main malloc arena (brk)
  stack      [stack]: the main thread's stack
  tstacks    other threads' stacks
  arenas     malloc arenas of other threads: glibc's heaps, each at a 64 MiB boundary
             (HEAP_MAX_SIZE), an rw mapping followed by its PROT_NONE reserve up to the
             next boundary; any other rw mapping before a PROT_NONE one (a large
             allocation just below a thread stack's guard page) is "anon"
  anon       every other anonymous mapping (large allocations: packet pools, tables;
             for a Go program, its heap and goroutine stacks)
  kernel     [vdso], [vvar] and the like
"""
import os
import sys

# glibc's non-main malloc heaps: HEAP_MAX_SIZE = 2 * DEFAULT_MMAP_THRESHOLD_MAX, 64 MiB on
# 64-bit systems; each heap is mapped at a multiple of it (malloc/arena.c, new_heap).
HEAP_MAX = 64 << 20


def mappings(pid):
    cur = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and not head[0].endswith(":"):
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                cur = {"lo": lo, "hi": hi, "perms": head[1],
                       "path": head[5] if len(head) > 5 else "", "rss": 0}
                yield cur
            elif head[0] == "Rss:":
                cur["rss"] = int(head[1])


def is_arena(m, nxt):
    """m is a glibc heap: 64 MiB-aligned, rw, and with the PROT_NONE reserve after it
    (when not grown to the full 64 MiB) ending at the next boundary."""
    if m["path"] or not m["perms"].startswith("rw") or m["lo"] % HEAP_MAX:
        return False
    if m["hi"] - m["lo"] == HEAP_MAX:
        return True
    return (nxt is not None and nxt["lo"] == m["hi"] and nxt["perms"].startswith("---") and
            not nxt["path"] and nxt["hi"] == m["lo"] + HEAP_MAX)


def stack_pointers(pid):
    sps = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/syscall") as f:
                fields = f.read().split()
        except OSError:
            continue
        # "nr a1..a6 sp pc", "-1 sp pc" (blocked, not in a syscall) or "running".
        if len(fields) >= 3 and fields[0] != "running":
            sps.append(int(fields[-2], 16))
    return sps


def classify(maps, sps, exe):
    """The part (above) of each mapping of maps, in order; sps: the threads' stack
    pointers; exe: the program's file."""
    for i, m in enumerate(maps):
        p = m["path"]
        nxt = maps[i + 1] if i + 1 < len(maps) else None
        if p == exe:
            yield "exe"
        elif p.startswith("/"):
            base = os.path.basename(p)
            if base.startswith(("libcrypto", "libssl")):
                yield "libcrypto"
            elif base.startswith(("libc.", "libm.", "ld-linux", "libc-")):
                yield "libc"
            else:
                yield "libs"
        elif p == "[heap]":
            yield "heap"
        elif p == "[stack]":
            yield "stack"
        elif p.startswith("["):
            yield "kernel"
        elif any(m["lo"] <= sp < m["hi"] for sp in sps):
            yield "tstacks"
        elif is_arena(m, nxt):
            yield "arenas"
        else:
            yield "anon"


def main():
    pid = sys.argv[1]
    exe = os.path.realpath(f"/proc/{pid}/exe")
    maps = list(mappings(pid))
    sps = stack_pointers(pid)
    parts = dict.fromkeys(["exe", "libcrypto", "libc", "libs", "heap", "stack", "tstacks",
                           "arenas", "anon", "kernel"], 0)
    anon = []
    for m, part in zip(maps, classify(maps, sps, exe)):
        if part == "anon" and m["rss"]:
            anon.append(m)
        parts[part] += m["rss"]
    for k, v in parts.items():
        print(k, v)
    print("total", sum(parts.values()))
    print("threads", len(os.listdir(f"/proc/{pid}/task")))
    for m in sorted(anon, key=lambda m: -m["rss"])[:8]:
        print("map", (m["hi"] - m["lo"]) // 1024, m["rss"], m["perms"])


if __name__ == "__main__":
    main()
