// End-to-end tests of the client against the real pushd binary
// (PUSHD_BIN, built by clients/js/client_test.go): reconnect with full
// jitter after kill -9, resume with no loss through connection cuts,
// and a refused handshake's Retry-After.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { after, test } from "node:test";
import { promisify } from "node:util";
import WebSocket from "ws";
import { connect } from "../pushd.js";
import { Proxy, publish, scale, sleep, startPushd, startRedis, waitFor } from "./helpers.mjs";

const N_CLIENTS = 20;
const WINDOW = 1000; // baseDelay: the first retry's jitter window, ms

// killRound connects N_CLIENTS clients to a pushd through a front Proxy,
// kills pushd with SIGKILL, starts a new one (on a fresh port; the front
// is pointed at it) and returns each client's first retry
// time (performance.now(), relative to the kill) and drawn delay, after
// checking that every client reconnected, resubscribed and receives a
// publication on the new process.
async function killRound(random) {
  let p = await startPushd();
  const front = await new Proxy(p.ws).listen();
  after(() => front.close());
  const clients = [];
  for (let i = 0; i < N_CLIENTS; i++) {
    const c = connect(`ws://${front.addr}/ws`, { WebSocket, baseDelay: WINDOW, maxDelay: 4 * WINDOW, pingInterval: 0, ...(random ? { random } : {}) });
    const rec = { c, firstRetry: -1, delay: -1, subscribed: 0, got: [] };
    c.on("reconnecting", (e) => {
      if (rec.delay < 0) rec.delay = e.delay;
    });
    c.on("connecting", (e) => {
      if (rec.delay >= 0 && rec.firstRetry < 0) rec.firstRetry = e.at;
    });
    c.on("subscribed", () => rec.subscribed++);
    c.on("message", (m) => rec.got.push(m.data));
    c.subscribe("jitter");
    clients.push(rec);
  }
  after(() => clients.forEach((r) => r.c.close()));
  await waitFor(() => clients.every((r) => r.subscribed === 1), 20000, "all clients subscribed");

  const killedAt = performance.now();
  front.hold(); // until the new pushd listens, retries fail as they would against a dead port
  await p.kill("SIGKILL");
  p = await startPushd();
  front.retarget(p.ws);
  after(() => p.kill("SIGTERM"));
  await waitFor(() => clients.every((r) => r.subscribed === 2 && r.c.state === "open"), 30000, "all clients back and resubscribed");
  await p.publish("jitter", { after: "restart" });
  await waitFor(() => clients.every((r) => r.got.length === 1), 10000, "the publication on the new process");
  for (const r of clients) {
    assert.deepEqual(r.got, [{ after: "restart" }]);
    r.c.close();
  }
  await p.kill("SIGTERM");
  return clients.map((r) => ({ at: r.firstRetry - killedAt, delay: r.delay }));
}

// jitterVerdict judges first retries: every instant distinct, spread over
// the window (range >= 30 % of it; 20 uniform draws fall in a narrower
// range with probability ~1e-9) and no 20 ms slot holding more than 5.
function jitterVerdict(retries) {
  const at = retries.map((r) => r.at).sort((a, b) => a - b);
  const distinct = new Set(at.map((t) => t.toFixed(3))).size === at.length;
  const range = at[at.length - 1] - at[0];
  let crowd = 0;
  for (let i = 0, j = 0; i < at.length; i++) {
    while (at[i] - at[j] > 20) j++;
    crowd = Math.max(crowd, i - j + 1);
  }
  return { distinct, range, crowd, ok: distinct && range >= 0.3 * WINDOW && crowd <= 5, at };
}

test("kill -9: 20 clients reconnect to the restarted pushd, first retries spread by full jitter", async () => {
  const retries = await killRound(undefined);
  assert.ok(retries.every((r) => r.at >= 0 && r.delay >= 0 && r.delay < WINDOW), `every client retried: ${JSON.stringify(retries)}`);
  const v = jitterVerdict(retries);
  console.log(`first retries after kill -9 (ms): ${v.at.map((t) => t.toFixed(1)).join(" ")}; range ${v.range.toFixed(0)} ms, at most ${v.crowd} in 20 ms`);
  assert.ok(v.distinct, "two clients retried at the same instant");
  assert.ok(v.ok, `retries not spread: range ${v.range.toFixed(0)} ms (want >= ${0.3 * WINDOW}), ${v.crowd} within 20 ms (want <= 5)`);

  // Control: the same round without jitter (every draw 0.5) must fail
  // the verdict, or the verdict proves nothing.
  const control = jitterVerdict(await killRound(() => 0.5));
  console.log(`control without jitter: range ${control.range.toFixed(0)} ms, ${control.crowd} in 20 ms`);
  assert.ok(!control.ok, `the verdict passed clients without jitter: ${JSON.stringify(control)}`);
});

test("resume: a durable channel's seq 1..300 arrive exactly once, in order, across 5 connection cuts", async () => {
  const p = await startPushd(["-history-size", "1000"]);
  after(() => p.kill("SIGTERM"));
  const proxy = await new Proxy(p.ws).listen();
  after(() => proxy.close());
  const c = connect(`ws://${proxy.addr}/ws`, { WebSocket, baseDelay: 100, maxDelay: 400, pingInterval: 0 });
  after(() => c.close());
  const got = [];
  const subs = [];
  c.on("message", (m) => got.push(m.seq));
  c.on("subscribed", (e) => subs.push(e));
  c.subscribe("durable:1", { since: 0 });
  await waitFor(() => subs.length === 1, 10000, "subscribed");

  const total = 300;
  const published = [];
  const publisher = (async () => {
    for (let i = 1; i <= total; i++) {
      published.push(await publish(p.admin, "durable:1", { i }));
      await sleep(5);
    }
  })();
  let cuts = 0;
  let missedWhileDown = 0;
  while (cuts < 5) {
    await sleep(150);
    const before = published.length;
    proxy.cut();
    cuts++;
    await sleep(200 + 100 * cuts); // publications go on meanwhile
    missedWhileDown += published.length - before;
    proxy.restore();
    await waitFor(() => c.state === "open", 10000, `reconnect after cut ${cuts}`);
  }
  await publisher;
  await waitFor(() => got.length >= total, 15000, `all ${total} messages (have ${got.length})`);
  await sleep(200);
  assert.deepEqual(published, Array.from({ length: total }, (_, i) => i + 1), "publish seqs");
  assert.deepEqual(got, published, "delivered seqs (exactly once, in order)");
  assert.ok(subs.length >= 6, `resubscribed ${subs.length - 1} times, want >= 5`);
  assert.ok(subs.every((s) => s.recovered), "a resume was not recovered");
  assert.ok(missedWhileDown > 0, "nothing was published while the client was cut off");
  console.log(`${total} delivered once each across ${cuts} cuts (${missedWhileDown} published while cut off, ${c.stats.duplicates} duplicates dropped, ${proxy.accepted} connections)`);
});

test("503 Retry-After on a refused handshake is honoured (npm ws exposes it)", async () => {
  const p = await startPushd(["-max-conns", "1"]);
  after(() => p.kill("SIGTERM"));
  const holder = connect(p.url(), { WebSocket, pingInterval: 0 });
  after(() => holder.close());
  await waitFor(() => holder.state === "open", 10000, "the first connection");
  const c = connect(p.url(), { WebSocket, baseDelay: 10, maxDelay: 20, pingInterval: 0 });
  after(() => c.close());
  const retries = [];
  c.on("reconnecting", (e) => retries.push(e));
  await waitFor(() => retries.length >= 1, 10000, "the refusal");
  assert.equal(retries[0].cause, "retry-after");
  assert.ok(retries[0].delay >= 1000, `delay ${retries[0].delay}, want >= Retry-After 1 s`);
  holder.close();
  await waitFor(() => c.state === "open", 10000 * scale, "the retry after Retry-After");
});

test("drain: SIGTERM's reconnect hint is honoured by every client (real pushd)", async () => {
  const jitter = 2000;
  let p = await startPushd(["-drain-duration", "300ms", "-reconnect-jitter", `${jitter}ms`]);
  const front = await new Proxy(p.ws).listen();
  after(() => front.close());
  const clients = [];
  for (let i = 0; i < 10; i++) {
    // A 20 ms backoff window: a client that ignored the hint would be
    // back within ~20 ms of the close.
    const c = connect(`ws://${front.addr}/ws`, { WebSocket, baseDelay: 20, maxDelay: 40, pingInterval: 0 });
    const rec = { c, hint: -1, close: null, retry: null, firstRetryAt: -1, subscribed: 0 };
    c.on("hint", (e) => (rec.hint = e.afterMs));
    c.on("close", (e) => (rec.close ??= { ...e, at: performance.now() }));
    c.on("reconnecting", (e) => (rec.retry ??= e));
    c.on("connecting", (e) => {
      if (rec.retry && rec.firstRetryAt < 0) rec.firstRetryAt = e.at;
    });
    c.on("subscribed", () => rec.subscribed++);
    c.subscribe("drain");
    clients.push(rec);
  }
  after(() => clients.forEach((r) => r.c.close()));
  await waitFor(() => clients.every((r) => r.subscribed === 1), 20000, "all clients subscribed");

  front.hold(); // a draining pushd accepts no new connections either
  await p.kill("SIGTERM"); // resolves when the drained process has exited
  p = await startPushd();
  front.retarget(p.ws);
  after(() => p.kill("SIGTERM"));
  await waitFor(() => clients.every((r) => r.subscribed === 2 && r.c.state === "open"), 30000, "all clients back on the restarted pushd");

  for (const [i, r] of clients.entries()) {
    assert.ok(r.hint >= 0 && r.hint <= jitter, `client ${i}: hint ${r.hint}, want after_ms in [0, ${jitter}]`);
    assert.equal(r.close.code, 1001, `client ${i}: close code`);
    assert.equal(r.retry.cause, "hint", `client ${i}: reconnect cause`);
    assert.equal(r.retry.delay, r.hint, `client ${i}: reconnect delay`);
    const waited = r.firstRetryAt - r.close.at;
    assert.ok(waited >= r.hint - 3, `client ${i}: retried ${waited.toFixed(0)} ms after the close, hint was ${r.hint} ms`);
  }
  // The check has teeth only if the hints are longer than the backoff.
  const long = clients.filter((r) => r.hint > 100).length;
  assert.ok(long >= 5, `only ${long} of 10 hints exceed 100 ms`);
  console.log(`drain hints (ms): ${clients.map((r) => r.hint).join(" ")}; waited: ${clients.map((r) => (r.firstRetryAt - r.close.at).toFixed(0)).join(" ")}`);
});

test("the built-in WebSocket (globalThis.WebSocket, undici) is used when no implementation is given", async () => {
  const p = await startPushd();
  after(() => p.kill("SIGTERM"));
  for (let i = 1; i <= 3; i++) await p.publish("builtin", { i });
  const script = `
    import { connect } from ${JSON.stringify(new URL("../pushd.js", import.meta.url).href)};
    const c = connect(${JSON.stringify(p.url())}, { pingInterval: 0 });
    const got = [];
    const timer = setTimeout(() => { console.error("timeout", got); process.exit(1); }, 10000);
    c.on("message", (m) => { got.push(m.seq); if (got.length === 3) { console.log(JSON.stringify(got)); c.close(); clearTimeout(timer); } });
    c.subscribe("builtin", { since: 0 });
  `;
  const { stdout } = await promisify(execFile)(process.execPath, ["--experimental-websocket", "--input-type=module", "-e", script], { timeout: 20000 * scale });
  assert.deepEqual(JSON.parse(stdout), [1, 2, 3]);
});

test("resume across kill -9 of pushd: with Redis the history survives, seq 1..200 arrive exactly once, in order", async () => {
  const redis = await startRedis();
  after(() => redis.stop());
  const args = ["-redis", redis.url, "-history-size", "1000"];
  // The client's node (killed and restarted) and a publishing node that
  // stays up; both go through the same redis-server.
  let node = await startPushd(args);
  const front = await new Proxy(node.ws).listen(); // the client's stable address across the restart
  after(() => front.close());
  const publisher = await startPushd(args);
  after(() => publisher.kill("SIGTERM"));
  await Promise.all([node.ready(), publisher.ready()]);
  const c = connect(`ws://${front.addr}/ws`, { WebSocket, baseDelay: 100, maxDelay: 400, pingInterval: 0 });
  after(() => c.close());
  const got = [];
  const subs = [];
  c.on("message", (m) => got.push(m.seq));
  c.on("subscribed", (e) => subs.push(e));
  const subErrors = [];
  c.on("error", (e) => e.code && subErrors.push(e.code));
  c.subscribe("durable:redis", { since: 0 });
  await waitFor(() => subs.length === 1, 15000, "subscribed");

  const total = 200;
  const published = [];
  let downFrom = 0;
  let downTo = 0;
  const pub = (async () => {
    for (let i = 1; i <= total; i++) {
      published.push(await publish(publisher.admin, "durable:redis", { i }));
      await sleep(5);
    }
  })();
  await waitFor(() => got.length >= 40, 15000, "40 messages before the kill");
  front.hold();
  await node.kill("SIGKILL");
  downFrom = published.length;
  await sleep(400);
  node = await startPushd(args);
  front.retarget(node.ws);
  after(() => node.kill("SIGTERM"));
  downTo = published.length;
  await pub;
  await waitFor(() => got.length >= total, 20000, `all ${total} messages (have ${got.length})`);
  await sleep(200);
  assert.deepEqual(published, Array.from({ length: total }, (_, i) => i + 1), "publish seqs");
  assert.deepEqual(got, published, "delivered seqs (exactly once, in order)");
  assert.ok(downTo - downFrom > 10, `only ${downTo - downFrom} published while the client's pushd was down`);
  assert.equal(subs.length, 2);
  assert.ok(subs[1].recovered, "the resume after the restart was not recovered");
  console.log(`redis: ${total} delivered once each; ${downTo - downFrom} published while the client's pushd was dead; sub errors retried: ${JSON.stringify(subErrors)}`);
});

// Binary payloads and permessage-deflate through the client: every byte
// 0x00-0xff published over HTTP arrives as the same bytes (a Uint8Array
// decoded from the "b64":true push), and npm ws negotiates
// permessage-deflate by default, so a 4 KB compressible push arrives
// compressed and is decoded transparently.
test("binary payloads and compressed pushes arrive exact", async () => {
  const p = await startPushd();
  after(() => p.kill("SIGTERM"));
  const c = connect(`ws://${p.ws}/ws`, { WebSocket, pingInterval: 0 });
  after(() => c.close());
  const got = [];
  let subscribed = 0;
  c.on("message", (m) => got.push(m.data));
  c.on("subscribed", () => subscribed++);
  c.subscribe("bin:1");
  await waitFor(() => subscribed === 1, 10000, "subscribed");
  assert.match(c._sock.extensions, /permessage-deflate/, "npm ws negotiated permessage-deflate");
  const bytes = Uint8Array.from({ length: 256 }, (_, i) => i);
  const res = await fetch(`http://${p.admin}/publish?ch=bin:1`, { method: "POST", body: bytes });
  assert.equal(res.status, 200, await res.text());
  const big = { players: Array.from({ length: 100 }, (_, i) => ({ id: i, x: 100 + i, y: 200, name: "player-name" })) };
  assert.ok(JSON.stringify(big).length >= 4096);
  await publish(p.admin, "bin:1", big);
  await waitFor(() => got.length === 2, 10000, "two pushes");
  assert.ok(got[0] instanceof Uint8Array, `binary push decoded to ${Object.prototype.toString.call(got[0])}`);
  assert.deepEqual([...got[0]], [...bytes]);
  assert.deepEqual(got[1], big);
});
