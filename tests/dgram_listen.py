#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""dgram_listen.py SOCKET OUTPUT: stand in for syslog's /dev/log or systemd's
$NOTIFY_SOCKET.  Binds an AF_UNIX datagram socket at SOCKET (a path, or
@NAME in the abstract namespace) and appends each datagram it receives to
OUTPUT as one line (a newline inside one becomes '|').  Runs until SIGTERM.
"""
import os
import signal
import socket
import sys


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: dgram_listen.py SOCKET OUTPUT")
    name, output = sys.argv[1], sys.argv[2]
    address = "\0" + name[1:] if name.startswith("@") else name
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener, open(output, "a") as log:
        listener.bind(address)
        if not name.startswith("@"):
            os.chmod(name, 0o666)
        log.write("listening\n")
        log.flush()
        while True:
            data = listener.recv(65536)
            log.write(data.decode(errors="replace").rstrip("\n").replace("\n", "|") + "\n")
            log.flush()


if __name__ == "__main__":
    main()
