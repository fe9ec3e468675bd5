#!/usr/bin/env node
// pushpeer.js subscribes to pushd with npm ws and reports what arrives, one
// JSON line per event on stdout; it judges nothing itself (the Go tests in
// conformance/deflate_test.go do).
//
// Usage: node pushpeer.js <ws://url> <deflate|plain> <count>
//
//   {"ev":"open","ext":"<Sec-WebSocket-Extensions of the 101>"}
//   {"ev":"msg","kind":"text|binary","len":N,"sha256":"…","body":"<base64>"}
//   …count messages, then {"ev":"done"} and a clean close.
//
// deflate: perMessageDeflate on (ws's default offer, with
// client_max_window_bits; threshold 0 so its own messages compress too);
// plain: off.
'use strict';

const crypto = require('node:crypto');
const WebSocket = require('ws');

const [url, mode, countArg] = process.argv.slice(2);
const count = Number(countArg || 1);
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n');

const ws = new WebSocket(url, {
  perMessageDeflate: mode === 'deflate' ? { threshold: 0 } : false,
  maxPayload: 64 << 20,
});
let got = 0;
const timer = setTimeout(() => {
  emit({ ev: 'error', error: `timeout after ${got} of ${count} messages` });
  process.exit(2);
}, 60000);
ws.on('upgrade', (res) => emit({ ev: 'open', ext: res.headers['sec-websocket-extensions'] || '' }));
ws.on('error', (err) => {
  emit({ ev: 'error', error: String(err && err.message) });
  process.exit(2);
});
ws.on('message', (data, isBinary) => {
  const b = Buffer.isBuffer(data) ? data : Buffer.concat(data);
  emit({ ev: 'msg', kind: isBinary ? 'binary' : 'text', len: b.length, sha256: crypto.createHash('sha256').update(b).digest('hex'), body: b.toString('base64') });
  if (++got === count) {
    emit({ ev: 'done' });
    ws.close(1000);
  }
});
ws.on('close', () => {
  clearTimeout(timer);
  process.exit(0);
});
