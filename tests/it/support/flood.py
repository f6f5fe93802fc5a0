"""A local connection flood against credvend's listeners, for the trust-boundary tests.

Run as root: it raises its own open-file limit, then drops to the uid given (so the daemon sees
another local user), opens `--idle` connections that never send anything and `--slow` slowloris
connections that send a request head one byte every half second, to each `--target` HOST:PORT,
and keeps that many open: every connection the daemon closes is opened again (at most
`--reopen-rate` per second in all). Prints `ready N` once the first round is open (N: how many
connections were open at that moment), then runs until its stdin closes.
"""

import argparse
import os
import resource
import socket
import sys
import threading
import time


def connect(target):
    host, port = target.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect_ex((host, int(port)))
    except OSError:
        pass
    return s


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--uid", type=int, required=True)
    parser.add_argument("--target", action="append", required=True)
    parser.add_argument("--idle", type=int, default=5000)
    parser.add_argument("--slow", type=int, default=2000)
    parser.add_argument("--reopen-rate", type=int, default=2000)
    args = parser.parse_args()

    want = (args.idle + args.slow) * len(args.target) + 100
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    os.setgid(args.uid)
    os.setuid(args.uid)

    head = b"GET /latest/meta-data/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 4096
    conns = []  # [socket, target, slow, offset]
    for target in args.target:
        for i in range(args.idle + args.slow):
            conns.append([connect(target), target, i >= args.idle, 0])
    time.sleep(0.5)
    open_now = 0
    for c in conns:
        try:
            c[0].getpeername()
            open_now += 1
        except OSError:
            pass
    print(f"ready {open_now}", flush=True)

    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    while not stop.is_set():
        budget = args.reopen_rate // 2
        for c in conns:
            s, target, slow, offset = c
            dead = False
            try:
                # A non-blocking read, not select(): select() cannot watch descriptors >= 1024.
                try:
                    dead = s.recv(4096, socket.MSG_DONTWAIT) == b""
                except BlockingIOError:
                    pass
                if not dead and slow and offset < len(head):
                    s.send(head[offset:offset + 1])
                    c[3] = offset + 1
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                dead = True
            if dead and budget > 0:
                budget -= 1
                s.close()
                c[0] = connect(target)
                c[3] = 0
        stop.wait(0.5)


if __name__ == "__main__":
    main()
