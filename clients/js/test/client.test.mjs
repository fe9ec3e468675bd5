// Unit tests of the client's reconnect, resume and heartbeat logic against
// a scripted pushd.v1 stub (npm ws server): the server side of each case
// is written out here, so the client's reaction can be timed exactly.
import assert from "node:assert/strict";
import { once } from "node:events";
import { after, test } from "node:test";
import WebSocket, { WebSocketServer } from "ws";
import { PushdClient, connect } from "../pushd.js";
import { scale, sleep, waitFor } from "./helpers.mjs";

// stub starts a ws server on 127.0.0.1:0; onConn(sock, n, ops) scripts
// connection n (1-based); ops collects every JSON op the client sent.
async function stub(onConn) {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, handleProtocols: (set) => (set.has("pushd.v1") ? "pushd.v1" : false) });
  await once(wss, "listening");
  const st = { wss, conns: [], url: `ws://127.0.0.1:${wss.address().port}/ws` };
  wss.on("connection", (sock) => {
    const c = { sock, ops: [], at: performance.now(), closedAt: 0 };
    st.conns.push(c);
    sock.on("error", () => {});
    sock.on("close", () => {
      c.closedAt = performance.now();
    });
    sock.on("message", (data) => {
      const m = JSON.parse(String(data));
      c.ops.push(m);
      c.onOp?.(m);
    });
    onConn(c, st.conns.length);
  });
  st.close = () => {
    for (const c of st.conns) c.sock.terminate();
    return new Promise((r) => wss.close(r));
  };
  after(() => st.close());
  return st;
}

const send = (c, m) => c.sock.send(JSON.stringify(m));

function client(url, opts = {}) {
  const c = connect(url, { WebSocket, baseDelay: 20, maxDelay: 200, pingInterval: 0, ...opts });
  const log = { messages: [], reconnecting: [], closes: [], subscribed: [], errors: [] };
  c.on("message", (m) => log.messages.push(m));
  c.on("reconnecting", (e) => log.reconnecting.push({ ...e, at: performance.now() }));
  c.on("close", (e) => log.closes.push({ ...e, at: performance.now() }));
  c.on("subscribed", (e) => log.subscribed.push(e));
  c.on("error", (e) => log.errors.push(e));
  after(() => c.close());
  return { c, log };
}

// hintCase: the server answers the sub, then (with hint) sends
// {"op":"reconnect","after_ms":hint} and closes with 1001. Returns the
// time from the close to the next connection.
async function hintCase(hint) {
  const st = await stub((c, n) => {
    c.onOp = (m) => {
      if (m.op !== "sub") return;
      send(c, { op: "subok", ch: m.ch, seq: 0, recovered: true });
      if (n === 1) {
        if (hint !== undefined) send(c, { op: "reconnect", after_ms: hint });
        c.sock.close(1001, "going away");
      }
    };
  });
  const { c, log } = client(st.url);
  c.subscribe("room:1", { since: 0 });
  await waitFor(() => st.conns.length >= 2, 10000, "the reconnect");
  const closedAt = log.closes[0].at;
  return { gap: st.conns[1].at - closedAt, log };
}

test("reconnect hint: waits after_ms instead of the backoff", async () => {
  const { gap, log } = await hintCase(1500);
  assert.equal(log.reconnecting[0].cause, "hint");
  assert.equal(log.reconnecting[0].delay, 1500);
  assert.ok(gap >= 1490, `reconnected ${gap.toFixed(0)} ms after the close, want >= 1500`);
  assert.ok(gap < 1500 + 2000 * scale, `reconnected ${gap.toFixed(0)} ms after the close, want about 1500`);
});

test("without a hint the same close reconnects within the backoff window (control)", async () => {
  const { gap, log } = await hintCase(undefined);
  assert.equal(log.reconnecting[0].cause, "backoff");
  assert.ok(log.reconnecting[0].delay < 20, `delay ${log.reconnecting[0].delay}`);
  assert.ok(gap < 1000 * scale, `reconnected ${gap.toFixed(0)} ms after the close, want well under the 1500 ms hint`);
});

test("close 1013 (try again later) widens the backoff window to overloadDelay", async () => {
  const st = await stub((c, n) => {
    if (n === 1) setTimeout(() => c.sock.close(1013, "overloaded"), 20);
  });
  const { log } = client(st.url, { overloadDelay: 1600, random: () => 0.5 });
  await waitFor(() => st.conns.length >= 2, 10000, "the reconnect");
  const r = log.reconnecting[0];
  assert.equal(r.cause, "overloaded");
  assert.equal(r.code, 1013);
  assert.equal(r.delay, 800); // 0.5 × max(20, 1600)
  const gap = st.conns[1].at - log.closes[0].at;
  assert.ok(gap >= 790, `reconnected after ${gap.toFixed(0)} ms, want >= 800`);
});

test("full jitter: delays are random draws over a doubling window", async () => {
  const st = await stub((c) => {
    c.sock.terminate(); // every attempt fails at once
  });
  const draws = [0.25, 0.5, 1, 0.75, 1, 1];
  let i = 0;
  const { c, log } = client(st.url, { baseDelay: 10, maxDelay: 100, random: () => draws[i++ % draws.length] });
  await waitFor(() => log.reconnecting.length >= 6, 10000, "six retries");
  c.close();
  // windows 10, 20, 40, 80, 100 (capped), 100
  assert.deepEqual(
    log.reconnecting.slice(0, 6).map((r) => r.delay),
    [2.5, 10, 40, 60, 100, 100],
  );
});

test("resume: resubscribes with since=<last seq> and drops duplicate seqs", async () => {
  const st = await stub((c, n) => {
    c.onOp = (m) => {
      if (m.op !== "sub") return;
      if (n === 1) {
        send(c, { op: "subok", ch: m.ch, seq: 0, recovered: true });
        for (const seq of [1, 2, 3, 2]) send(c, { ch: m.ch, seq, data: { n: seq } });
        setTimeout(() => c.sock.terminate(), 50);
      } else {
        send(c, { op: "subok", ch: m.ch, seq: 5, recovered: true });
        for (const seq of [3, 4, 5]) send(c, { ch: m.ch, seq, data: { n: seq } });
      }
    };
  });
  const { c, log } = client(st.url);
  c.subscribe("room:1", { since: 0 });
  await waitFor(() => log.messages.length >= 5, 10000, "five messages");
  await sleep(100);
  assert.deepEqual(st.conns[0].ops, [{ op: "sub", ch: "room:1", since: 0 }]);
  assert.deepEqual(st.conns[1].ops, [{ op: "sub", ch: "room:1", since: 3 }]);
  assert.deepEqual(log.messages.map((m) => m.seq), [1, 2, 3, 4, 5]);
  assert.deepEqual(log.messages.map((m) => m.data.n), [1, 2, 3, 4, 5]);
  assert.equal(c.stats.duplicates, 2);
  assert.equal(c.lastSeq("room:1"), 5);
});

test("epochs: resume sends (epoch, since); a new epoch is never dropped as duplicates and is reported as recovered:false", async () => {
  const st = await stub((c, n) => {
    c.onOp = (m) => {
      if (m.op !== "sub") return;
      if (n === 1) {
        send(c, { op: "subok", ch: m.ch, epoch: "e1", seq: 0, recovered: true });
        for (const seq of [1, 2, 3, 4, 5]) send(c, { ch: m.ch, epoch: "e1", seq, data: seq });
        setTimeout(() => c.sock.terminate(), 50);
      } else if (n === 2) {
        // The server restarted (memory broker): a new epoch, seq from 1.
        send(c, { op: "subok", ch: m.ch, epoch: "e2", seq: 1, recovered: false });
        send(c, { ch: m.ch, epoch: "e2", seq: 1, data: 6 });
        send(c, { ch: m.ch, epoch: "e2", seq: 2, data: 7 });
        // Live: the stream is recreated again (a Redis flush).
        send(c, { ch: m.ch, epoch: "e3", seq: 1, data: 8 });
        send(c, { ch: m.ch, epoch: "e3", seq: 1, data: "dup" });
        send(c, { ch: m.ch, epoch: "e3", seq: 3, data: 9 });
      }
    };
  });
  const { c, log } = client(st.url);
  const gaps = [];
  c.on("gap", (g) => gaps.push(g));
  c.subscribe("ep", { since: 0 });
  await waitFor(() => log.messages.length >= 9, 10000, "nine messages");
  await sleep(50);
  assert.deepEqual(st.conns[1].ops, [{ op: "sub", ch: "ep", since: 5, epoch: "e1" }]);
  assert.deepEqual(log.messages.map((m) => m.data), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.deepEqual(log.messages.map((m) => m.epoch), ["e1", "e1", "e1", "e1", "e1", "e2", "e2", "e3", "e3"]);
  assert.deepEqual(log.subscribed.map((e) => [e.epoch, e.recovered]), [["e1", true], ["e2", false], ["e3", false]]);
  assert.deepEqual(gaps, [{ ch: "ep", epoch: "e3", from: 2, to: 2, detected: true }]);
  assert.equal(c.stats.duplicates, 1);
  assert.deepEqual(c.position("ep"), { epoch: "e3", seq: 3 });
  assert.throws(() => c.subscribe("x", { epoch: "e1" }), /given with since/);
  assert.throws(() => c.subscribe("x", { since: 1, epoch: "a b" }), /epoch must be/);
});

test("resume without since: continues from the subok seq", async () => {
  const st = await stub((c, n) => {
    c.onOp = (m) => {
      if (m.op !== "sub") return;
      send(c, { op: "subok", ch: m.ch, seq: 41, recovered: true });
      if (n === 1) setTimeout(() => c.sock.terminate(), 20);
    };
  });
  const { c, log } = client(st.url);
  c.subscribe("news");
  await waitFor(() => log.subscribed.length >= 2, 10000, "the second subok");
  assert.deepEqual(st.conns[0].ops, [{ op: "sub", ch: "news" }]);
  assert.deepEqual(st.conns[1].ops, [{ op: "sub", ch: "news", since: 41 }]);
});

test("dead connection: ping op after pingInterval of silence, reconnect when no pong follows", async () => {
  const st = await stub((c, n) => {
    c.onOp = (m) => {
      if (n > 1 && m.op === "ping") send(c, { op: "pong" });
    };
  });
  const { c, log } = client(st.url, { pingInterval: 300, pongTimeout: 800 });
  await waitFor(() => st.conns.length >= 2, 10000, "the reconnect after the silent server");
  const first = st.conns[0];
  assert.deepEqual(first.ops, [{ op: "ping" }]);
  assert.equal(log.closes[0].reason, "no pong");
  const dropAfter = log.closes[0].at - first.at;
  assert.ok(dropAfter >= 1090, `dropped after ${dropAfter.toFixed(0)} ms, want >= pingInterval + pongTimeout`);
  assert.equal(c.stats.deadConnections, 1);
  // Control: the second server answers pings; the connection stays.
  await sleep(2000);
  assert.equal(st.conns.length, 2, "a connection answering pings was dropped");
  assert.ok(st.conns[1].ops.filter((m) => m.op === "ping").length >= 3, "no periodic pings on the live connection");
  assert.equal(c.state, "open");
});

test("a refused subscription (err 403) is reported and not retried after a reconnect", async () => {
  const st = await stub((c, n) => {
    c.onOp = (m) => {
      if (m.op !== "sub") return;
      if (m.ch === "secret") send(c, { op: "err", ch: m.ch, code: 403, reason: "channel is not public" });
      else send(c, { op: "subok", ch: m.ch, seq: 0, recovered: true });
      if (n === 1 && c.ops.length === 2) setTimeout(() => c.sock.terminate(), 20);
    };
  });
  const { c, log } = client(st.url);
  c.subscribe("secret").subscribe("open");
  await waitFor(() => st.conns.length >= 2 && st.conns[1].ops.length >= 1, 10000, "the resubscription");
  await sleep(100);
  assert.deepEqual(log.errors.filter((e) => e.code).map((e) => [e.ch, e.code]), [["secret", 403]]);
  assert.deepEqual(st.conns[1].ops, [{ op: "sub", ch: "open", since: 0 }]); // resumes from subok seq 0
});

test("a failed subscription (err 500) is retried on the same connection", async () => {
  let subs = 0;
  const st = await stub((c) => {
    c.onOp = (m) => {
      if (m.op !== "sub") return;
      if (++subs <= 2) send(c, { op: "err", ch: m.ch, code: 500, reason: "subscribe failed" });
      else send(c, { op: "subok", ch: m.ch, seq: 7, recovered: true });
    };
  });
  const { c, log } = client(st.url, { baseDelay: 50 });
  c.subscribe("room:9", { since: 3 });
  await waitFor(() => log.subscribed.length === 1, 10000, "the subok after two failures");
  assert.equal(st.conns.length, 1);
  assert.deepEqual(st.conns[0].ops, Array(3).fill({ op: "sub", ch: "room:9", since: 3 }));
  assert.deepEqual(log.errors.map((e) => e.code), [500, 500]);
});

test("close() ends the client: no reconnect", async () => {
  const st = await stub(() => {});
  const { c } = client(st.url);
  await waitFor(() => c.state === "open", 10000, "open");
  c.close();
  await sleep(300);
  assert.equal(st.conns.length, 1);
  assert.equal(c.state, "closed");
});

test("token option offers bearer.<token> next to pushd.v1", async () => {
  const seen = [];
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, handleProtocols: (set) => { seen.push([...set]); return "pushd.v1"; } });
  await once(wss, "listening");
  wss.on("connection", (s) => s.on("error", () => {}));
  let n = 0;
  const c = new PushdClient(`ws://127.0.0.1:${wss.address().port}/ws`, { WebSocket, token: () => `t${++n}` }).open();
  after(() => {
    c.close();
    for (const s of wss.clients) s.terminate();
    return new Promise((r) => wss.close(r));
  });
  await waitFor(() => c.state === "open", 10000, "open");
  assert.deepEqual(seen, [["pushd.v1", "bearer.t1"]]);
});

test("no WebSocket implementation: a clear error", () => {
  const saved = globalThis.WebSocket;
  globalThis.WebSocket = undefined;
  try {
    assert.throws(() => new PushdClient("ws://127.0.0.1:1/ws"), /no WebSocket implementation/);
  } finally {
    globalThis.WebSocket = saved;
  }
});
