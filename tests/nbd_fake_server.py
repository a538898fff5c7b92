#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# nbd_fake_server.py: a hostile NBD server for tests/test-adversary-nbd.sh,
# doing what nbdkit will not (fixed newstyle, OPT_GO, structured replies,
# base:allocation; a zero-filled export of --size bytes).  Each connection
# in a thread of its own.  The attacks:
#   --swap TARGET   once the first client has sent its flags (the daemon's
#                   helper has connected every socket of the job by then),
#                   each --unix path is renamed away and replaced by a
#                   symbolic link to TARGET, before the handshake goes on
#   --errmsg TEXT   answer OPT_GO with NBD_REP_ERR_UNKNOWN and TEXT
#                   (backslash escapes decoded)
#   --mode mute     accept and never say a word
#   --mode stallreq answer the handshake, never a request
#   --mode bs-zero  block status: one extent of length 0
#   --mode bs-huge  block status: 4 Mi extents of 512 bytes
#   --mode bs-slow  block status answered after --delay seconds, 4 KiB of data
#   --mode flush-slow  NBD_CMD_FLUSH answered after --delay seconds
#   --multiconn     advertise multi-conn
# Prints "ready" once it listens.
import os, socket, struct, sys, threading, time, argparse

p = argparse.ArgumentParser()
p.add_argument('--unix', action='append', default=[])
p.add_argument('--tcp', type=int)
p.add_argument('--size', type=int, default=64 << 20)
p.add_argument('--mode', default='normal')
p.add_argument('--swap', help='after accept: replace socket path with symlink to this')
p.add_argument('--errmsg', default='')
p.add_argument('--multiconn', action='store_true')
p.add_argument('--delay', type=float, default=0.0)
a = p.parse_args()

NBDMAGIC = 0x4e42444d41474943; IHAVEOPT = 0x49484156454F5054; REPLYMAGIC = 0x3e889045565a9
OPT_EXPORT_NAME=1; OPT_ABORT=2; OPT_LIST=3; OPT_STRUCT=8; OPT_INFO=6; OPT_GO=7; OPT_SET_META=10; OPT_LIST_META=9
REP_ACK=1; REP_INFO=3; REP_META=4; REP_ERR_UNSUP=(1<<31)+1; REP_ERR_UNKNOWN=(1<<31)+6
data = bytearray(0)
swapped = False

def rx(c, n):
    b = b''
    while len(b) < n:
        x = c.recv(n - len(b))
        if not x: raise EOFError
        b += x
    return b

def optrep(c, opt, typ, payload=b''):
    c.sendall(struct.pack('>QIII', REPLYMAGIC, opt, typ, len(payload)) + payload)

def serve(c):
    try:
        if a.mode == 'mute':
            time.sleep(3600); return
        c.sendall(struct.pack('>QQH', NBDMAGIC, IHAVEOPT, 3))
        rx(c, 4)
        global swapped
        if a.swap and not swapped:
            swapped = True
            for path in a.unix:
                os.rename(path, path + '.moved')
                os.symlink(a.swap, path)
        structured = False
        while True:
            magic, opt, ln = struct.unpack('>QII', rx(c, 16))
            body = rx(c, ln)
            if opt == OPT_STRUCT:
                structured = True; optrep(c, opt, REP_ACK)
            elif opt in (OPT_SET_META, OPT_LIST_META):
                optrep(c, opt, REP_META, struct.pack('>I', 1) + b'base:allocation')
                optrep(c, opt, REP_ACK)
            elif opt in (OPT_GO, OPT_INFO):
                if a.errmsg:
                    optrep(c, opt, REP_ERR_UNKNOWN, a.errmsg.encode('latin1').decode('unicode_escape').encode('latin1'))
                    continue
                # HAS_FLAGS, SEND_FLUSH, SEND_FUA, SEND_WRITE_ZEROES
                flags = 1 | (1<<2) | (1<<3) | (1<<6)
                if a.multiconn: flags |= (1<<8)
                optrep(c, opt, REP_INFO, struct.pack('>HQH', 0, a.size, flags))
                optrep(c, opt, REP_ACK)
                if opt == OPT_GO: break
            elif opt == OPT_ABORT:
                optrep(c, opt, REP_ACK); return
            else:
                optrep(c, opt, REP_ERR_UNSUP)
        while True:
            magic, flags, typ, handle, off, ln = struct.unpack('>IHHQQI', rx(c, 28))
            if typ == 1:
                rx(c, ln)
            if a.mode == 'stallreq': time.sleep(3600)
            if typ == 0:  # read
                if structured:
                    hdr = struct.pack('>IHHQI', 0x668e33ef, 1, 1, handle, 8 + ln)  # OFFSET_DATA, DONE
                    c.sendall(hdr + struct.pack('>Q', off) + bytes(ln))
                else:
                    c.sendall(struct.pack('>IIQ', 0x67446698, 0, handle) + bytes(ln))
            elif typ == 7:  # block status
                if a.mode == 'bs-slow':
                    # A slow but valid answer: one small data extent each time, so that each
                    # sub-job asks again (and waits again).
                    time.sleep(a.delay)
                    ext = struct.pack('>II', min(ln, 4096), 0)
                elif a.mode == 'bs-zero':
                    ext = struct.pack('>II', 0, 0) * 1
                elif a.mode == 'bs-huge':
                    n = (32 << 20) // 8
                    ext = struct.pack('>II', 512, 0) * n
                else:
                    ext = struct.pack('>II', ln, 0)
                pl = struct.pack('>I', 1) + ext
                c.sendall(struct.pack('>IHHQI', 0x668e33ef, 1, 5, handle, len(pl)) + pl)
            elif typ == 2:
                c.close(); return
            elif typ == 3 and a.mode == 'flush-slow':
                time.sleep(a.delay)
                c.sendall(struct.pack('>IHHQI', 0x668e33ef, 1, 0, handle, 0))
            else:
                if structured:
                    c.sendall(struct.pack('>IHHQI', 0x668e33ef, 1, 0, handle, 0))
                else:
                    c.sendall(struct.pack('>IIQ', 0x67446698, 0, handle))
    except (EOFError, ConnectionError, BrokenPipeError):
        pass
    finally:
        c.close()

def loop(s):
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()

socks = []
for path in a.unix:
    s = socket.socket(socket.AF_UNIX); s.bind(path); s.listen(64); socks.append(s)
if a.tcp:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', a.tcp)); s.listen(64); socks.append(s)
print('ready', flush=True)
for s in socks[1:]:
    threading.Thread(target=loop, args=(s,), daemon=True).start()
loop(socks[0])
