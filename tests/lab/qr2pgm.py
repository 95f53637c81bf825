#!/usr/bin/env python3
# The terminal QR code in a text file (`trellis-control users add --totp`: UTF-8 half
# blocks, two modules a character, dark drawn) as a PGM image on stdout, for zbarimg.
import sys

H = {' ': (0, 0), '\u2580': (1, 0), '\u2584': (0, 1), '\u2588': (1, 1)}
S = 4  # pixels a module
rows = []
for line in open(sys.argv[1], encoding='utf-8').read().split('\n'):
    if len(line) >= 21 and set(line) <= set(H):
        rows.append([H[c][0] for c in line])
        rows.append([H[c][1] for c in line])
if not rows:
    sys.exit('qr2pgm: no QR code in ' + sys.argv[1])
w = max(len(r) for r in rows)
out = sys.stdout.buffer
out.write(b'P5 %d %d 255\n' % (w * S, len(rows) * S))
for r in rows:
    out.write(bytes(0 if (x < len(r) and r[x]) else 255 for x in range(w) for _ in range(S)) * S)
