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
  arenas     malloc arenas of other threads (an rw mapping followed by its PROT_NONE reserve)
  anon       every other anonymous mapping (large allocations: packet pools, tables;
             for a Go program, its heap and goroutine stacks)
  kernel     [vdso], [vvar] and the like
"""
import os
import sys


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


def main():
    pid = sys.argv[1]
    exe = os.path.realpath(f"/proc/{pid}/exe")
    maps = list(mappings(pid))
    sps = stack_pointers(pid)
    parts = dict.fromkeys(["exe", "libcrypto", "libc", "libs", "heap", "stack", "tstacks",
                           "arenas", "anon", "kernel"], 0)
    anon = []
    for i, m in enumerate(maps):
        p = m["path"]
        nxt = maps[i + 1] if i + 1 < len(maps) else None
        if p == exe:
            part = "exe"
        elif p.startswith("/"):
            base = os.path.basename(p)
            if base.startswith(("libcrypto", "libssl")):
                part = "libcrypto"
            elif base.startswith(("libc.", "libm.", "ld-linux", "libc-")):
                part = "libc"
            else:
                part = "libs"
        elif p == "[heap]":
            part = "heap"
        elif p == "[stack]":
            part = "stack"
        elif p.startswith("["):
            part = "kernel"
        elif any(m["lo"] <= sp < m["hi"] for sp in sps):
            part = "tstacks"
        elif (m["perms"].startswith("rw") and nxt and nxt["lo"] == m["hi"] and
              nxt["perms"].startswith("---") and not nxt["path"]):
            part = "arenas"
        else:
            part = "anon"
            if m["rss"]:
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
