"""peer.py drives pushd (in -echo mode) with Debian's python3-websockets and
prints one JSON observation per line on stdout. It judges nothing itself: the
Go test in conformance/python_test.go compares the observations with the
payloads it expects.

Usage: /usr/bin/python3 peer.py <cases|server-close> <ws://url> [sizes...]

Payloads are built exactly like conformance/harness_test.go builds them:
text = repeats of the 17-byte unit "pushd é€𝄞 ~" then 'x' padding; binary
byte i = ((i % 251) * 131 + 17) & 0xff.
"""

import asyncio
import hashlib
import json
import sys

import websockets

STEP_TIMEOUT = 60
VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]
UNIT = "pushd é€𝄞 ~".encode()
BASE = bytes(((k * 131 + 17) & 0xFF) for k in range(251))


def text_payload(n):
    return (UNIT * (n // len(UNIT)) + b"x" * (n % len(UNIT))).decode()


def bin_payload(n):
    return (BASE * (n // len(BASE) + 1))[:n]


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def observe(case, kind, size, got):
    data = got.encode() if isinstance(got, str) else got
    return {
        "case": case,
        "kind": kind,
        "size": size,
        "got_kind": "text" if isinstance(got, str) else "binary",
        "got_size": len(data),
        "got_sha256": hashlib.sha256(data).hexdigest(),
    }


def connect(url):
    return websockets.connect(url, max_size=None, compression=None, open_timeout=STEP_TIMEOUT)


async def echo_cases(url, sizes):
    for kind in ("text", "binary"):
        async with connect(url) as ws:
            for n in sizes:
                case = f"echo-{kind}-{n}"
                try:
                    await ws.send(text_payload(n) if kind == "text" else bin_payload(n))
                    got = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
                    emit(observe(case, kind, n, got))
                except Exception as e:  # reported, judged by the Go test
                    emit({"case": case, "error": repr(e)})


async def frag_cases(url):
    async with connect(url) as ws:
        for kind, n in (("text", 65536), ("binary", 1 << 20)):
            case = f"frag-{kind}-{n}"
            p = text_payload(n) if kind == "text" else bin_payload(n)
            parts = [p[:1000], p[1000 : n - 1000], p[n - 1000 :]]
            ping = f"frag-ping-{kind}".encode()
            pongs = []

            async def fragments():
                for i, part in enumerate(parts):
                    yield part
                    if i < len(parts) - 1:
                        # The message is half sent: pushd must answer now.
                        waiter = await ws.ping(ping)
                        await asyncio.wait_for(waiter, STEP_TIMEOUT)
                        pongs.append(ping)

            try:
                await ws.send(fragments())
                got = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
                r = observe(case, kind, n, got)
                r["fragments"] = len(parts)
                r["ping"] = ping.hex()
                r["got_pong"] = ping.hex() if pongs == [ping, ping] else ",".join(x.hex() for x in pongs)
                emit(r)
            except Exception as e:
                emit({"case": case, "error": repr(e)})


async def ping_cases(url):
    async with connect(url) as ws:
        for case, p in (("ping-empty", b""), ("ping-text", b"Hello, world!"), ("ping-125", bin_payload(125))):
            try:
                # websockets resolves the waiter only for a pong that
                # carries this ping's payload.
                waiter = await ws.ping(p)
                await asyncio.wait_for(waiter, STEP_TIMEOUT)
                emit({"case": case, "ping": p.hex(), "got_pong": p.hex()})
            except Exception as e:
                emit({"case": case, "ping": p.hex(), "error": repr(e)})


async def close_case(url, code):
    case = f"close-{code}"
    try:
        ws = await connect(url)
        await asyncio.wait_for(ws.close(code=code, reason=f"reason é {code}"), STEP_TIMEOUT)
        emit({"case": case, "code": code, "got_code": ws.close_code})
    except Exception as e:
        emit({"case": case, "code": code, "error": repr(e)})


async def server_close(url):
    async with connect(url) as ws:
        emit({"case": "ready"})
        await asyncio.wait_for(ws.wait_closed(), STEP_TIMEOUT)
        emit({"case": "server-close-python", "got_code": ws.close_code})


async def main():
    mode, url = sys.argv[1], sys.argv[2]
    sizes = [int(s) for s in sys.argv[3:]]
    if mode == "server-close":
        await server_close(url)
        return
    await echo_cases(url, sizes)
    await frag_cases(url)
    await ping_cases(url)
    await asyncio.gather(*(close_case(url, c) for c in VALID_CODES))


if __name__ == "__main__":
    asyncio.run(main())
