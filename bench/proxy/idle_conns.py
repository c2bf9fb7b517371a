#!/usr/bin/env python3
"""Opens COUNT keep-alive TLS connections to 127.0.0.1:PORT and holds them idle.

Used by bench/proxy/run.py for the "idle keep-alive connections" row (RSS per
connection of the server). Each connection completes the TLS handshake and one
HTTP/1.1 request (GET PATH with the given headers, keep-alive), reads the whole
response, and then stays open without traffic, as a browser's idle connection
does. Standard library only.

Protocol on stdout (one JSON object per line):
  {"event": "opened", "opened": N, "failed": F, "seconds": S, "statuses": {...}, "errors": {...}}
then the script waits for a line on stdin (or --hold-seconds), checks how many
connections the server has not closed in the meantime, prints
  {"event": "held", "alive": A, "closed_by_server": C}
and closes everything.
"""

import argparse
import asyncio
import collections
import json
import resource
import ssl
import sys
import time


async def open_one(host, port, ctx, request, timeout):
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=ctx, server_hostname="localhost"), timeout
    )
    try:
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status = int(head.split(b" ", 2)[1])
        length = 0
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            while True:
                size = int((await asyncio.wait_for(reader.readline(), timeout)).split(b";")[0], 16)
                await asyncio.wait_for(reader.readexactly(size + 2), timeout)
                if size == 0:
                    break
        elif length:
            await asyncio.wait_for(reader.readexactly(length), timeout)
        return reader, writer, status
    except BaseException:
        writer.transport.abort()
        raise


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--path", default="/bench")
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--parallel", type=int, default=64, help="handshakes in flight")
    ap.add_argument("--timeout", type=float, default=30.0, help="per connection")
    ap.add_argument("--open-seconds", type=float, default=300.0, help="bound on the opening phase")
    ap.add_argument("--hold-seconds", type=float, default=120.0)
    args = ap.parse_args()
    host = "127.0.0.1"

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    lines = [f"GET {args.path} HTTP/1.1", f"Host: {host}:{args.port}", "Connection: keep-alive"]
    lines += args.header
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()

    conns = []
    statuses = collections.Counter()
    errors = collections.Counter()
    sem = asyncio.Semaphore(args.parallel)

    async def worker():
        async with sem:
            try:
                r, w, status = await open_one(host, args.port, ctx, request, args.timeout)
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors[type(e).__name__] += 1
                return
            statuses[str(status)] += 1
            conns.append((r, w))

    start = time.monotonic()
    tasks = [asyncio.ensure_future(worker()) for _ in range(args.count)]
    done, pending = await asyncio.wait(tasks, timeout=args.open_seconds)
    for t in pending:
        t.cancel()
    if pending:
        errors["open_phase_timeout"] += len(pending)
        await asyncio.gather(*pending, return_exceptions=True)
    opened = len(conns)
    print(json.dumps({
        "event": "opened", "opened": opened, "failed": args.count - opened,
        "seconds": round(time.monotonic() - start, 2),
        "statuses": dict(statuses), "errors": dict(errors),
    }), flush=True)

    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    try:
        await asyncio.wait_for(stdin.readline(), args.hold_seconds)
    except asyncio.TimeoutError:
        pass
    await asyncio.sleep(0)  # let pending EOFs arrive
    alive = sum(1 for r, _ in conns if not r.at_eof())
    print(json.dumps({"event": "held", "alive": alive, "closed_by_server": opened - alive}), flush=True)
    for _, w in conns:
        w.transport.abort()


if __name__ == "__main__":
    asyncio.run(main())
