// The README's "Delivery guarantees" table, one test per fault: the real
// client (pushd.js on npm ws) against the real pushd binary and real
// redis-server processes. Each row subscribes with since 0, receives
// pushes 1-5, suffers the fault, and then pushes 6-8 are published; the
// row counts what the client lost and received twice and how often it was
// told recovered:false, and prints one "ROW" line with the numbers.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { after, test } from "node:test";
import WebSocket from "ws";
import { connect } from "../pushd.js";
import { publish, scale, sleep, startPushd, startRedis, waitFor } from "./helpers.mjs";

// publishRetry publishes through pushd's admin /publish, retrying while
// the node answers 503 (its Redis path is broken: nothing was published).
async function publishRetry(node, ch, body) {
  const deadline = Date.now() + 20000 * scale;
  for (;;) {
    try {
      return await publish(node.admin, ch, body);
    } catch (e) {
      if (!/HTTP 503/.test(e.message) || Date.now() > deadline) throw e;
      await sleep(50);
    }
  }
}

// watch subscribes a client to ch with since 0 on node's URL.
function watch(url, ch) {
  const c = connect(url, { WebSocket, baseDelay: 100, maxDelay: 400, pingInterval: 0 });
  after(() => c.close());
  const w = { c, got: [], subs: [] };
  c.on("message", (m) => w.got.push(m.data.i));
  c.on("subscribed", (e) => w.subs.push(e));
  c.subscribe(ch, { since: 0 });
  return w;
}

// row runs one fault: pushes 1-5, fault(), then publishAfter() (6-8), and
// returns the client's counts once 1-8 arrived.
async function row(name, w, publishBefore, fault, publishAfter) {
  await waitFor(() => w.subs.length === 1, 15000, "subscribed");
  for (let i = 1; i <= 5; i++) await publishBefore(i);
  await waitFor(() => w.got.length >= 5, 15000, "pushes 1-5");
  await fault();
  await publishAfter();
  await waitFor(() => new Set(w.got).size >= 8, 20000, `pushes 6-8 (have ${JSON.stringify(w.got)})`);
  await sleep(300); // a late duplicate would show now
  const distinct = new Set(w.got);
  const res = {
    received: w.got.length,
    lost: 8 - distinct.size,
    duplicated: w.got.length - distinct.size,
    recoveredFalse: w.subs.filter((e) => !e.recovered).length,
    subscribedAgain: w.subs.length - 1,
  };
  console.log(`ROW ${name}: ${JSON.stringify(res)} order ${JSON.stringify(w.got)}`);
  assert.deepEqual(w.got, [1, 2, 3, 4, 5, 6, 7, 8], "every push once, in order");
  return res;
}

test("pushd restart (memory broker): pushes 6-8 of the new epoch all arrive; the resubscribe says recovered:false", async () => {
  let node = await startPushd();
  const port = node.ws.split(":").pop();
  after(() => node.kill("SIGTERM"));
  const w = watch(node.url(), "ep");
  const res = await row(
    "memory-restart",
    w,
    (i) => publish(node.admin, "ep", { i }),
    async () => {
      await node.kill("SIGKILL");
      node = await startPushd(["-listen", `127.0.0.1:${port}`]);
    },
    async () => {
      // 6 before the client is back (recovered from the new epoch's
      // history), 7 and 8 after its resubscribe (live).
      await publish(node.admin, "ep", { i: 6 });
      await waitFor(() => w.subs.length >= 2, 15000, "the resubscribe");
      await publish(node.admin, "ep", { i: 7 });
      await publish(node.admin, "ep", { i: 8 });
    },
  );
  assert.equal(res.recoveredFalse, 1, "the resubscribe after the restart must say recovered:false");
  assert.notEqual(w.subs[1].epoch, w.subs[0].epoch, "a restarted memory broker has a new epoch");
});

test("Redis faults on one node: FLUSHALL + CLIENT KILL TYPE pubsub, pub/sub killed, Redis paused 3 s, Redis restarted without persistence", async () => {
  const redis = await startRedis();
  after(() => redis.stop());
  const node = await startPushd(["-redis", redis.url, "-history-size", "1000"]);
  after(() => node.kill("SIGTERM"));
  await node.ready();
  const pub = (ch) => (i) => publishRetry(node, ch, { i });
  const pubRange = (ch) => async () => {
    for (let i = 6; i <= 8; i++) await publishRetry(node, ch, { i });
  };

  // The stream is flushed and the node's subscription broken: the next
  // publish makes a new epoch; the client hears recovered:false.
  let w = watch(node.url(), "flush");
  let res = await row("redis-flushall+pubsub-kill", w, pub("flush"), async () => {
    redis.cli("FLUSHALL");
    redis.cli("CLIENT", "KILL", "TYPE", "pubsub");
  }, pubRange("flush"));
  assert.equal(res.recoveredFalse, 1, "FLUSHALL must be reported as recovered:false");

  // Only the pub/sub connection dies; 6-8 are published while the node
  // resubscribes: recovered from the stream, same epoch.
  w = watch(node.url(), "pskill");
  res = await row("redis-pubsub-kill", w, pub("pskill"), async () => {
    redis.cli("CLIENT", "KILL", "TYPE", "pubsub");
  }, pubRange("pskill"));
  assert.equal(res.recoveredFalse, 0);

  // Redis hangs for 3 s; a backend's FCALLs sent meanwhile run when it
  // resumes.
  w = watch(node.url(), "pause");
  res = await row("redis-sigstop-3s", w, pub("pause"), async () => {
    redis.signal("SIGSTOP");
  }, async () => {
    // One redis-cli, three commands in order on its connection.
    const cli = spawn("redis-cli", ["-p", String(redis.port)], { stdio: ["pipe", "ignore", "inherit"] });
    const done = once(cli, "exit");
    for (const i of [6, 7, 8]) cli.stdin.write(`FCALL pushd_publish 1 pushd:{pause} '{"i":${i}}'\n`);
    cli.stdin.end();
    await sleep(3000);
    redis.signal("SIGCONT");
    const [code] = await done;
    assert.equal(code, 0, "redis-cli FCALL");
  });
  assert.equal(res.recoveredFalse, 0);

  // Redis crashes and comes back empty: a new epoch.
  w = watch(node.url(), "norestart");
  res = await row("redis-restart-no-persistence", w, pub("norestart"), () => redis.restart(), pubRange("norestart"));
  assert.equal(res.recoveredFalse, 1, "a Redis that lost its data must be reported as recovered:false");
});

test("Redis restart with AOF (appendfsync always): the history survives, same epoch, nothing lost", async () => {
  const redis = await startRedis({ aof: true });
  after(() => redis.stop());
  const node = await startPushd(["-redis", redis.url, "-history-size", "1000"]);
  after(() => node.kill("SIGTERM"));
  await node.ready();
  const w = watch(node.url(), "aof");
  const res = await row("redis-restart-aof", w, (i) => publishRetry(node, "aof", { i }), () => redis.restart(), async () => {
    for (let i = 6; i <= 8; i++) await publishRetry(node, "aof", { i });
  });
  assert.equal(res.recoveredFalse, 0);
});
