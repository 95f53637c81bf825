#!/usr/bin/env python3
# `trellis-control users add EMAIL --totp` on a terminal (a pty): the password twice, then the
# QR code and secret, then the CLI asks for a code of the app. A wrong code is refused and asked
# again; the right one confirms the factor. Prints one JSON line of what happened.
#   totp_tty.py PASSWORD -- TRELLIS_CONTROL ARGS...
import json, os, pty, re, select, subprocess, sys, termios, time

pw, argv = sys.argv[1], sys.argv[3:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
buf = b''


def expect(pattern, timeout=90, since=0):
    """Waits for pattern in what came after offset since."""
    global buf
    end = time.monotonic() + timeout
    while not re.search(pattern, buf[since:]):
        left = end - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise SystemExit(json.dumps({'error': 'no ' + pattern.decode(), 'out': buf.decode(errors='replace')}))
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            chunk = b''
        if not chunk:
            raise SystemExit(json.dumps({'error': 'eof before ' + pattern.decode(), 'out': buf.decode(errors='replace')}))
        buf += chunk


def code(secret, later=0):
    args = ['oathtool', '--totp', '-b', secret]
    if later:
        args += ['-N', 'now + %d seconds' % later]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()


def echo_off(timeout=30):
    """The CLI turns echo off after its prompt with TCSAFLUSH, which drops what came before."""
    end = time.monotonic() + timeout
    while termios.tcgetattr(fd)[3] & termios.ECHO:
        if time.monotonic() > end:
            raise SystemExit(json.dumps({'error': 'echo stays on', 'out': buf.decode(errors='replace')}))
        time.sleep(0.01)


out = {}
expect(rb'password for ')
echo_off()
os.write(fd, pw.encode() + b'\n')
expect(rb'again: ')
echo_off()
os.write(fd, pw.encode() + b'\n')
expect(rb'code from the authenticator app for [^ ]+ \(Enter: later\): ')
secret = re.search(rb'secret: ([A-Z2-7]+)', buf).group(1).decode()
mark = len(buf)
os.write(fd, code(secret, 600).encode() + b'\n')  # outside the window: wrong now
expect(rb'code from the authenticator app', since=mark)
out['wrong'] = buf[mark:].decode(errors='replace')
mark = len(buf)
os.write(fd, code(secret).encode() + b'\n')
expect(rb'is confirmed', since=mark)
out['right'] = re.search(rb'The second factor of [^ ]+ is confirmed\.', buf[mark:]).group(0).decode()
_, status = os.waitpid(pid, 0)
out['exit'] = os.waitstatus_to_exitcode(status)
print(json.dumps(out))
