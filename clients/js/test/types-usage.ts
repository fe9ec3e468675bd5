// Compiled (never run) by types.test.mjs with tsc --strict: the public
// API as an application uses it must type-check against pushd.d.ts.
import { connect, PushdClient, defaults, type ClientOptions, type Message } from "../pushd.js";

const opts: ClientOptions = { baseDelay: 250, token: () => "jwt", shouldReconnect: (ev) => ev.code !== 4003 };
const c: PushdClient = connect("ws://127.0.0.1:8080/ws", opts);
c.subscribe("room:1", { since: 0 }).subscribe("news");
const off: () => void = c.on("message", (m: Message) => {
  const seq: number = m.seq;
  void seq;
});
c.on("reconnecting", ({ delay, cause }) => {
  const d: number = delay;
  const k: "backoff" | "hint" | "overloaded" | "retry-after" = cause;
  void d;
  void k;
});
c.on("subscribed", ({ recovered }) => void (recovered satisfies boolean));
const last: number | undefined = c.lastSeq("room:1");
const pos = c.position("room:1");
if (pos) c.unsubscribe("room:1").subscribe("room:1", { since: pos.seq, epoch: pos.epoch });
c.on("message", ({ epoch }) => void (epoch satisfies string | undefined));
c.on("gap", ({ from, to, detected }) => void [from satisfies number, to satisfies number, detected satisfies boolean]);
const base: number = defaults.baseDelay;
void last;
void base;
off();
c.unsubscribe("news").close();
const asyncOpts: ClientOptions = { token: async () => "jwt" };
const c2 = connect("ws://127.0.0.1:8080/ws", asyncOpts);
c2.on("tokenError", ({ error, phase }) => void [error.message satisfies string, phase satisfies "connect" | "refresh"]);
c2.on("refreshed", ({ exp }) => void (exp satisfies number));
c2.on("expiring", ({ inMs }) => void (inMs satisfies number));
c2.on("unsubscribed", ({ ch, reason }) => void [ch, reason]);
c2.close();
