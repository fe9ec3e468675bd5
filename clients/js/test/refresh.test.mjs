// In-band token refresh against the real pushd binary (issue 16): an
// async token() is called on connect and again on the server's expiring
// hint; the connection outlives its first token's exp; token failures
// surface as tokenError events.
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import WebSocket from "ws";
import { connect } from "../pushd.js";
import { publish, sleep, startPushd, waitFor } from "./helpers.mjs";

const SECRET = "refresh-test-secret-0123456789abcdef";

const b64 = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

// hs256 signs a token for sub valid for ttl ms (exp has 1 s resolution).
export function hs256(sub, ttlMs, channels = ["room:*"], secret = SECRET) {
  const head = b64({ alg: "HS256", typ: "JWT" });
  const body = b64({ sub, exp: Math.floor((Date.now() + ttlMs) / 1000), channels });
  const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

async function startAuthPushd() {
  const dir = mkdtempSync(join(tmpdir(), "pushd-refresh-"));
  const file = join(dir, "secret");
  writeFileSync(file, SECRET + "\n");
  const p = await startPushd(["-jwt-hs256-secret-file", file, "-auth-required"]);
  after(() => p.child.kill("SIGKILL"));
  return p;
}

test("an async token is refreshed in band and the connection outlives the first exp", async () => {
  const p = await startAuthPushd();
  const calls = [];
  const firstExp = Date.now() + 3000;
  const c = connect(p.url(), {
    WebSocket,
    pingInterval: 0,
    // First token: 3 s; the one fetched on the expiring hint: an hour.
    token: async () => {
      calls.push(Date.now());
      await sleep(20);
      return hs256("alice", calls.length === 1 ? 3000 : 3600_000);
    },
  });
  after(() => c.close());
  const got = [];
  const ev = { expiring: 0, refreshed: 0, tokenError: 0, closes: 0 };
  c.on("message", (m) => got.push(m.data));
  c.on("expiring", () => ev.expiring++);
  c.on("refreshed", () => ev.refreshed++);
  c.on("tokenError", () => ev.tokenError++);
  c.on("close", () => ev.closes++);
  let subscribed = 0;
  c.on("subscribed", () => subscribed++);
  c.subscribe("room:1");
  await waitFor(() => subscribed === 1, 20000, "subscribed");
  await waitFor(() => ev.refreshed === 1, 20000, "refreshed");
  // Past the first token's exp, by a margin.
  await sleep(Math.max(0, firstExp - Date.now()) + 1500);
  await publish(p.admin, "room:1", '"after-exp"');
  await waitFor(() => got.includes("after-exp"), 20000, "push after the first exp");
  assert.equal(ev.closes, 0, "the connection never closed");
  assert.equal(c.stats.connects, 1);
  assert.equal(c.stats.refreshes, 1);
  assert.equal(ev.expiring, 1);
  assert.equal(ev.tokenError, 0);
  assert.equal(calls.length, 2, "token() called on connect and on the hint");
  console.log(`# token() calls at +0 and +${calls[1] - calls[0]} ms; first exp at +${firstExp - calls[0]} ms`);
});

test("a rejecting token() emits tokenError and the client retries", async () => {
  const p = await startAuthPushd();
  let n = 0;
  const errors = [];
  const c = connect(p.url(), {
    WebSocket,
    baseDelay: 50,
    pingInterval: 0,
    token: () => (++n < 3 ? Promise.reject(new Error(`token endpoint down ${n}`)) : Promise.resolve(hs256("bob", 3600_000))),
  });
  after(() => c.close());
  c.on("tokenError", (e) => errors.push(`${e.phase}: ${e.error.message}`));
  let opened = 0;
  c.on("open", () => opened++);
  await waitFor(() => opened === 1, 20000, "open after two token failures");
  assert.deepEqual(errors, ["connect: token endpoint down 1", "connect: token endpoint down 2"]);
});

test("a refresh refused by the server (another sub) surfaces as tokenError and the old exp holds", async () => {
  const p = await startAuthPushd();
  let n = 0;
  const c = connect(p.url(), {
    WebSocket,
    pingInterval: 0,
    reconnect: false,
    token: () => (++n === 1 ? hs256("carol", 3000) : hs256("mallory", 3600_000)),
  });
  after(() => c.close());
  const errors = [];
  let closeCode = 0;
  c.on("tokenError", (e) => errors.push(e));
  c.on("close", (e) => (closeCode = e.code));
  await waitFor(() => closeCode !== 0, 20000, "close at the first exp");
  assert.equal(closeCode, 4003);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].phase, "refresh");
  assert.equal(errors[0].code, 403);
});
