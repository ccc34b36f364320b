#!/usr/bin/env python3
"""Raw-socket peers for scripts/bench/faults (python3 stdlib only).

  faultpeer.py attack HOST PORT MODE [--tool T] [--count N]
                      [--bound S] [--late S] [--seed S]
      Opens COUNT connections at once to a listener and misbehaves on each (MODE below);
      prints "ready" on stderr once every connection has had its first bytes, watches
      them for BOUND seconds, then prints one JSON line on stdout: how many connected,
      how many the listener closed and how fast, how many it held longer than LATE
      seconds (or past BOUND), and the start of its first answer.
  faultpeer.py serve HOST PORT MODE [--tool T] [--seed S]
      A fake listener for a real client: answers every connection with MODE (the client
      speaks first, so its Hello is read first).
      Prints "listening" on stderr, one line per connection on stdout; runs until killed.
  faultpeer.py moments LABEL N MAX [--seed S]
      N random moments in [0, MAX) seconds, one a line, from SEED and LABEL.
  faultpeer.py judge kvxfer|collbench|netcheck FILE EXIT_CODE
      Reads a tool's --json report: "ok|false|fail DETAIL" (false: a false completion,
      exit 0 with a failed, unverified or corrupt KV request, or collbench #wrong > 0).

MODEs: garbage (random bytes), oversize (a valid header announcing 4 GiB or the limit + 1),
badversion (a valid header and Hello of another protocol version), midframe (half a frame,
then close), slowloris (a valid frame dripped one byte per second), idle/silent (connect
and say nothing), forged (a Hello claiming a token, then a bogus Auth proof and a rendezvous
Join{rank:1}).

Wire layouts (crates/fabric/src/control/frame.rs, crates/collective/src/rendezvous.rs):
  NLNK: "NLNK" | u16 version=1 | u8 kind | u32 length | JSON payload   (limit 64 KiB)
  Every tool's listener (the collective rendezvous's too, tool "collbench") opens with the
  session Hello; the rendezvous's own messages follow on the same frame (kinds 141-146).
"""
import json
import os
import random
import resource
import selectors
import socket
import struct
import sys
import threading
import time

NLNK_VERSION = 1
NLNK_MAX = 64 * 1024
NLNK_HELLO = 1
NLNK_AUTH = 2
RV_JOIN = 141


def nlnk(kind, payload, version=NLNK_VERSION, length=None):
    length = len(payload) if length is None else length
    return b"NLNK" + struct.pack(">HBI", version, kind, length) + payload


def hello_payload(tool, version=NLNK_VERSION):
    return json.dumps({"version": version, "tool": tool, "software": "0.1.0",
                       "nonce": os.urandom(16).hex(), "auth": True}).encode()


def rv_join(rank=1, world=2, addr="10.83.0.2:40000"):
    return json.dumps({"Join": {"rank": rank, "world": world, "data_addr": addr}}).encode()


def first_bytes(mode, tool, rng, index):
    """What a connection sends first (all of it, or what is dripped for slowloris)."""
    if mode == "garbage":
        data = bytes(rng.getrandbits(8) for _ in range(300))
        return b"X" + data[1:]  # never starts with a magic by chance
    if mode == "oversize":
        return nlnk(NLNK_HELLO, b"", length=0xFFFFFFFF if index % 2 == 0 else NLNK_MAX + 1)
    if mode == "badversion":
        version = 0xFFFF if index % 2 == 0 else NLNK_VERSION + 1
        return nlnk(NLNK_HELLO, hello_payload(tool, version), version=version)
    frame = nlnk(NLNK_HELLO, hello_payload(tool))
    if mode == "midframe":
        return frame[: len(frame) // 2]
    if mode == "slowloris":
        return frame
    return b""


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def printable(data):
    text = data[:120].decode("latin-1")
    return "".join(c if 32 <= ord(c) < 127 else "." for c in text)


def attack(args):
    raise_nofile()
    rng = random.Random(f"{args.seed}:{args.mode}:{args.port}")
    sel = selectors.DefaultSelector()
    conns = []
    start = time.monotonic()
    # Non-blocking connects, all at once: the listener sees COUNT concurrent sockets.
    for i in range(args.count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect_ex((args.host, args.port))
        except OSError:
            s.close()
            continue
        conns.append({"i": i, "s": s, "connected": False, "closed": None, "got": b"",
                      "todo": b"", "next_drip": 0.0})
    deadline = time.monotonic() + 10
    pending = {id(c["s"]): c for c in conns}
    for c in conns:
        sel.register(c["s"], selectors.EVENT_WRITE, c)
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.2):
            c = key.data
            err = c["s"].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            sel.unregister(c["s"])
            pending.pop(id(c["s"]), None)
            if err == 0:
                c["connected"] = True
                c["t0"] = time.monotonic()
            else:
                c["s"].close()
    for c in pending.values():
        sel.unregister(c["s"])
        c["s"].close()
    live = [c for c in conns if c["connected"]]
    if args.mode == "forged":
        # Open with a Hello that claims a token, read the listener's Hello, then send a
        # made-up proof and claim rank 1 at once.
        for c in live:
            c["s"].setblocking(True)
            c["s"].settimeout(3)
            try:
                c["s"].sendall(nlnk(NLNK_HELLO, hello_payload(args.tool)))
                c["got"] += c["s"].recv(4096)
                proof = json.dumps({"mac": "00" * 32}).encode()
                c["s"].sendall(nlnk(NLNK_AUTH, proof) + nlnk(RV_JOIN, rv_join()))
            except OSError:
                pass
            c["s"].setblocking(False)
    else:
        for c in live:
            data = first_bytes(args.mode, args.tool, rng, c["i"])
            if args.mode == "slowloris":
                c["todo"] = data
                continue
            try:
                c["s"].sendall(data) if data else None
            except OSError:
                pass
            if args.mode == "midframe":
                c["s"].close()
                c["closed"] = 0.0
    print("ready", file=sys.stderr, flush=True)
    watched = [c for c in live if c["closed"] is None]
    for c in watched:
        sel.register(c["s"], selectors.EVENT_READ, c)
    end = time.monotonic() + args.bound
    while time.monotonic() < end and any(c["closed"] is None for c in watched):
        now = time.monotonic()
        if args.mode == "slowloris":
            for c in watched:
                if c["closed"] is None and c["todo"] and now >= c["next_drip"]:
                    try:
                        c["s"].send(c["todo"][:1])
                        c["todo"] = c["todo"][1:]
                    except OSError:
                        pass
                    c["next_drip"] = now + 1.0
        for key, _ in sel.select(timeout=0.1):
            c = key.data
            try:
                data = c["s"].recv(65536)
            except (ConnectionResetError, OSError):
                data = b""
            if data:
                if len(c["got"]) < 4096:
                    c["got"] += data
            else:
                c["closed"] = time.monotonic() - c["t0"]
                sel.unregister(c["s"])
    times = sorted(c["closed"] for c in watched if c["closed"] is not None)
    reply = next((c["got"] for c in live if c["got"]), b"")
    result = {
        "mode": args.mode, "count": args.count, "connected": len(live),
        "closed": len(times) + (len(live) - len(watched)),
        "held_past_bound": sum(1 for c in watched if c["closed"] is None),
        "late": sum(1 for c in watched if c["closed"] is None or c["closed"] > args.late),
        "max_close_s": round(times[-1], 2) if times else None,
        "median_close_s": round(times[len(times) // 2], 2) if times else None,
        "elapsed_s": round(time.monotonic() - start, 2),
        "reply": printable(reply),
    }
    late = f"held past {args.late:g} s" if args.late < 1e9 else "held past the watch"
    if args.mode == "midframe":
        result["note"] = f"{result['connected']}/{args.count} junk connected, each closed mid-frame"
    else:
        result["note"] = (f"{result['connected']}/{args.count} junk connected, {result['closed']} "
                          f"dropped (slowest {result['max_close_s']} s), {result['late']} {late}")
    print(json.dumps(result), flush=True)
    for c in live:
        try:
            c["s"].close()
        except OSError:
            pass


def serve_one(conn, peer, args, index):
    rng = random.Random(f"{args.seed}:{args.mode}:{index}")
    began = time.monotonic()
    conn.settimeout(3)
    note = ""
    try:
        # The client's Hello first: header, then its payload.
        head = b""
        while len(head) < 11:
            chunk = conn.recv(11 - len(head))
            if not chunk:
                break
            head += chunk
        if len(head) == 11:
            left = struct.unpack(">I", head[7:11])[0]
            while left > 0:
                chunk = conn.recv(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)
        data = b"" if args.mode == "silent" else first_bytes(args.mode, args.tool, rng, index)
        if args.mode == "slowloris":
            conn.settimeout(1)
            for i in range(len(data)):
                conn.send(data[i:i + 1])
                try:
                    if conn.recv(4096) == b"":
                        note = f"client closed after {i + 1} dripped bytes"
                        break
                except socket.timeout:
                    pass
        elif args.mode == "midframe":
            conn.sendall(data)
            conn.close()
            note = "sent half a frame and closed"
        else:
            if data:
                conn.sendall(data)
            # Hold the connection until the client gives up (at most 120 s).
            conn.settimeout(120)
            while conn.recv(4096):
                pass
            note = "client closed"
    except OSError as e:
        note = f"{type(e).__name__}: {e}"
    finally:
        try:
            conn.close()
        except OSError:
            pass
    print(f"{peer[0]}:{peer[1]} {args.mode}: {note} after {time.monotonic() - began:.2f} s",
          flush=True)


def serve(args):
    raise_nofile()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(256)
    print(f"listening on {args.host}:{args.port} ({args.tool} {args.mode})",
          file=sys.stderr, flush=True)
    index = 0
    while True:
        conn, peer = listener.accept()
        threading.Thread(target=serve_one, args=(conn, peer, args, index), daemon=True).start()
        index += 1


def moments(args):
    rng = random.Random(f"{args.seed}:{args.label}")
    for _ in range(args.n):
        print(f"{rng.uniform(0, args.max):.3f}")


def judge(args):
    """One line: "ok|false|fail DETAIL" for a tool's --json output and exit code."""
    code = int(args.code) if args.code.isdigit() else -1
    try:
        with open(args.file) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        doc = None
    if args.kind == "kvxfer":
        if doc is None:
            print("false exit 0 without a JSON report" if code == 0 else "fail no JSON report")
            return
        req, failed = doc.get("requests", 0), doc.get("failed", 0)
        integ, want = doc.get("integrity_failures", 0), doc.get("num_prompts", 0)
        figures = f"{req} ok, {failed} failed, {integ} integrity failures of {want}"
        if code == 0 and (failed or integ or req != want or doc.get("verified") is not True):
            print(f"false exit 0 with {figures}, verified={doc.get('verified')}")
        elif code == 0:
            print(f"ok {figures}, verified")
        else:
            errors = doc.get("errors") or [doc.get("stopped") or ""]
            print(f"fail {figures}: {errors[0]}")
    elif args.kind == "collbench":
        if doc is None:
            print("false exit 0 without a JSON report" if code == 0 else "fail no JSON report")
        elif code == 0 and doc.get("wrong", 1) != 0:
            print(f"false exit 0 with {doc.get('wrong')} wrong elements")
        else:
            print(f"{'ok' if code == 0 else 'fail'} {len(doc.get('rows', []))} sizes, "
                  f"{doc.get('wrong')} wrong")
    else:  # netcheck: served when the pair checks ran (local checks may fail on this host)
        doc = doc or {}
        checks = doc.get("checks", []) + (doc.get("pair") or {}).get("checks", [])
        pair = [c for c in checks if c.get("id", "").startswith("pair.")]
        ran = any(c["id"] == "pair.bandwidth" and c.get("status") != "fail" for c in pair)
        print(f"{'ok' if ran else 'fail'} {len(pair)} pair checks")


def main():
    import argparse
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("attack", "serve"):
        q = sub.add_parser(name)
        q.add_argument("host")
        q.add_argument("port", type=int)
        q.add_argument("mode", choices=["garbage", "oversize", "badversion", "midframe",
                                        "slowloris", "idle", "silent", "forged"])
        q.add_argument("--tool", default="linkbench")
        q.add_argument("--count", type=int, default=1)
        q.add_argument("--bound", type=float, default=15, help="attack: watch this long")
        q.add_argument("--late", type=float, default=1e9,
                       help="attack: count connections the listener held longer than this")
        q.add_argument("--seed", default="1")
    q = sub.add_parser("moments")
    q.add_argument("label")
    q.add_argument("n", type=int)
    q.add_argument("max", type=float)
    q.add_argument("--seed", default="1")
    q = sub.add_parser("judge")
    q.add_argument("kind", choices=["kvxfer", "collbench", "netcheck"])
    q.add_argument("file")
    q.add_argument("code")
    args = p.parse_args()
    {"attack": attack, "serve": serve, "moments": moments, "judge": judge}[args.command](args)


if __name__ == "__main__":
    main()
