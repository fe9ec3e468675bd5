"""pushpeer.py subscribes to pushd with Debian's python3-websockets (which
offers permessage-deflate by default) and reports what arrives, one JSON
line per event on stdout; it judges nothing itself (the Go tests in
conformance/deflate_test.go do).

Usage: /usr/bin/python3 pushpeer.py <ws://url> <count>

  {"ev": "open", "ext": "<Sec-WebSocket-Extensions of the 101>"}
  {"ev": "msg", "kind": "text|binary", "len": N, "sha256": "...", "body": "<base64>"}
  ... count messages, then {"ev": "done"} and a clean close.
"""

import asyncio
import base64
import hashlib
import json
import sys

import websockets


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main(url, count):
    async with websockets.connect(url, max_size=64 << 20) as ws:
        emit({"ev": "open", "ext": ws.response_headers.get("Sec-WebSocket-Extensions", "")})
        for _ in range(count):
            m = await asyncio.wait_for(ws.recv(), 60)
            b = m.encode() if isinstance(m, str) else m
            emit({"ev": "msg", "kind": "text" if isinstance(m, str) else "binary", "len": len(b),
                  "sha256": hashlib.sha256(b).hexdigest(), "body": base64.b64encode(b).decode()})
        emit({"ev": "done"})


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
