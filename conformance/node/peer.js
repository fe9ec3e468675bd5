#!/usr/bin/env node
// peer.js drives pushd (in -echo mode) with an npm WebSocket client and
// prints one JSON observation per line on stdout. It judges nothing itself:
// the Go test in conformance/node_test.go compares the observations with the
// payloads it expects.
//
// Usage: node peer.js <ws|undici> <cases|server-close> <ws://url> [sizes...]
//
// Payloads are built exactly like conformance/harness_test.go builds them:
// text = repeats of the 17-byte unit "pushd é€𝄞 ~" then 'x' padding; binary
// byte i = ((i % 251) * 131 + 17) & 0xff.
'use strict';

const crypto = require('node:crypto');

const [clientName, mode, url, ...sizeArgs] = process.argv.slice(2);
const sizes = sizeArgs.map(Number);
const validCodes = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999];
const browserCodes = [1000, 3000, 3999, 4000, 4999];
const stepTimeoutMs = 60000;

const unit = Buffer.from('pushd é€𝄞 ~', 'utf8');

function textPayload(n) {
  const b = Buffer.alloc(n, 'x');
  for (let i = 0; i + unit.length <= n; i += unit.length) unit.copy(b, i);
  return b;
}

function binPayload(n) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = ((i % 251) * 131 + 17) & 0xff;
  return b;
}

const sha256 = (b) => crypto.createHash('sha256').update(b).digest('hex');
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n');

function withTimeout(p, what) {
  let timer;
  return Promise.race([
    p,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timeout: ${what}`)), stepTimeoutMs);
    }),
  ]).finally(() => clearTimeout(timer));
}

// Client adapters: a uniform promise-based face over ws and undici.
function open(u) {
  if (clientName === 'ws') return openWs(u);
  if (clientName === 'undici') return openUndici(u);
  throw new Error(`unknown client ${clientName}`);
}

function openWs(u) {
  const WebSocket = require('ws');
  const ws = new WebSocket(u, { maxPayload: 64 << 20, perMessageDeflate: false });
  const inbox = [];
  const waiters = [];
  const pongs = [];
  let closed = null;
  let closeWaiters = [];
  ws.on('error', (err) => {
    if (!closed) closed = { code: 1006, reason: String(err && err.message) };
  });
  ws.on('message', (data, isBinary) => {
    const m = { kind: isBinary ? 'binary' : 'text', data: Buffer.isBuffer(data) ? data : Buffer.concat(data) };
    if (waiters.length) waiters.shift()(m);
    else inbox.push(m);
  });
  ws.on('pong', (data) => pongs.push(Buffer.from(data)));
  ws.on('close', (code, reason) => {
    closed = { code, reason: reason.toString() };
    closeWaiters.forEach((f) => f(closed));
    closeWaiters = [];
    waiters.splice(0).forEach((f) => f(null));
  });
  const c = {
    send: (buf, kind) => ws.send(buf, { binary: kind === 'binary' }),
    sendFragment: (buf, kind, fin) => ws.send(buf, { binary: kind === 'binary', fin }),
    ping: (buf) => ws.ping(buf),
    pongs,
    next: () => (inbox.length ? Promise.resolve(inbox.shift()) : closed ? Promise.resolve(null) : new Promise((r) => waiters.push(r))),
    close: (code, reason) => ws.close(code, reason),
    closed: () => (closed ? Promise.resolve(closed) : new Promise((r) => closeWaiters.push(r))),
  };
  return withTimeout(
    new Promise((resolve, reject) => {
      ws.once('open', () => resolve(c));
      ws.once('error', reject);
    }),
    'ws open',
  );
}

function openUndici(u) {
  const { WebSocket } = require('undici');
  const ws = new WebSocket(u);
  ws.binaryType = 'arraybuffer';
  const inbox = [];
  const waiters = [];
  let closed = null;
  let closeWaiters = [];
  ws.addEventListener('message', (ev) => {
    const m = typeof ev.data === 'string'
      ? { kind: 'text', data: Buffer.from(ev.data, 'utf8') }
      : { kind: 'binary', data: Buffer.from(ev.data) };
    if (waiters.length) waiters.shift()(m);
    else inbox.push(m);
  });
  ws.addEventListener('close', (ev) => {
    closed = { code: ev.code, reason: ev.reason };
    closeWaiters.forEach((f) => f(closed));
    closeWaiters = [];
    waiters.splice(0).forEach((f) => f(null));
  });
  const c = {
    send: (buf, kind) => ws.send(kind === 'text' ? buf.toString('utf8') : buf),
    next: () => (inbox.length ? Promise.resolve(inbox.shift()) : closed ? Promise.resolve(null) : new Promise((r) => waiters.push(r))),
    close: (code, reason) => ws.close(code, reason),
    closed: () => (closed ? Promise.resolve(closed) : new Promise((r) => closeWaiters.push(r))),
  };
  return withTimeout(
    new Promise((resolve, reject) => {
      ws.addEventListener('open', () => resolve(c), { once: true });
      ws.addEventListener('error', (ev) => reject(new Error(`undici error: ${ev.message || ev.error || 'connect failed'}`)), { once: true });
    }),
    'undici open',
  );
}

async function observeEcho(c, caseName, kind, size, send) {
  const r = { case: caseName, kind, size };
  try {
    send();
    const m = await withTimeout(c.next(), caseName);
    if (!m) throw new Error('connection closed before the echo');
    Object.assign(r, { got_kind: m.kind, got_size: m.data.length, got_sha256: sha256(m.data) });
  } catch (e) {
    r.error = String(e && e.message);
  }
  return r;
}

async function echoCases() {
  for (const kind of ['text', 'binary']) {
    const c = await open(url);
    for (const n of sizes) {
      const p = kind === 'text' ? textPayload(n) : binPayload(n);
      emit(await observeEcho(c, `echo-${kind}-${n}`, kind, n, () => c.send(p, kind)));
    }
    c.close(1000, 'done');
    await withTimeout(c.closed(), 'close after echoes');
  }
}

async function fragCases(c) {
  // Three fragments with a ping after the first and after the second.
  for (const [kind, n] of [['text', 65536], ['binary', 1 << 20]]) {
    const p = kind === 'text' ? textPayload(n) : binPayload(n);
    const parts = [p.subarray(0, 1000), p.subarray(1000, n - 1000), p.subarray(n - 1000)];
    const ping = Buffer.from(`frag-ping-${kind}`);
    const before = c.pongs.length;
    const r = await observeEcho(c, `frag-${kind}-${n}`, kind, n, () => {
      c.sendFragment(parts[0], kind, false);
      c.ping(ping);
      c.sendFragment(parts[1], kind, false);
      c.ping(ping);
      c.sendFragment(parts[2], kind, true);
    });
    r.fragments = parts.length;
    r.ping = ping.toString('hex');
    const got = c.pongs.slice(before);
    r.got_pong = got.length === 2 && got[0].equals(ping) && got[1].equals(ping) ? ping.toString('hex')
      : got.map((b) => b.toString('hex')).join(',');
    emit(r);
  }
}

async function pingCases(c) {
  const payloads = { 'ping-empty': Buffer.alloc(0), 'ping-text': Buffer.from('Hello, world!'), 'ping-125': binPayload(125) };
  for (const [name, p] of Object.entries(payloads)) {
    const r = { case: name, ping: p.toString('hex') };
    try {
      const before = c.pongs.length;
      c.ping(p);
      await withTimeout((async () => {
        while (c.pongs.length === before) await new Promise((res) => setTimeout(res, 5));
      })(), name);
      r.got_pong = c.pongs[before].toString('hex');
    } catch (e) {
      r.error = String(e && e.message);
    }
    emit(r);
  }
}

async function closeCases() {
  const codes = clientName === 'ws' ? validCodes : browserCodes;
  await Promise.all(codes.map(async (code) => {
    const r = { case: `close-${code}`, code };
    try {
      const c = await open(url);
      c.close(code, `reason é ${code}`);
      const got = await withTimeout(c.closed(), `close ${code}`);
      r.got_code = got.code;
    } catch (e) {
      r.error = String(e && e.message);
    }
    emit(r);
  }));
}

async function serverClose() {
  const c = await open(url);
  emit({ case: 'ready' });
  const got = await withTimeout(c.closed(), 'server close');
  emit({ case: `server-close-${clientName}`, got_code: got.code });
}

async function main() {
  if (mode === 'server-close') return serverClose();
  await echoCases();
  if (clientName === 'ws') {
    const c = await open(url);
    await fragCases(c);
    await pingCases(c);
    c.close(1000, 'done');
    await withTimeout(c.closed(), 'close after pings');
  }
  await closeCases();
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`peer.js ${clientName}: ${e && e.stack}\n`);
    process.exit(1);
  },
);
