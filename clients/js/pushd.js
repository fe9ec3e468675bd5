// pushd.js: a zero-dependency client for pushd's pushd.v1 protocol, for
// browsers and Node >= 20 (an ES module). Types: pushd.d.ts.
//
//   import { connect } from "./pushd.js";
//   const c = connect("ws://127.0.0.1:8080/ws");
//   c.subscribe("room:1", { since: 0 });
//   c.on("message", (m) => console.log(m.ch, m.epoch, m.seq, m.data));
//
// What it does for the application:
// - reconnects after any loss, waiting a random delay in [0, min(maxDelay,
//   baseDelay * 2^attempt)] ("full jitter"), so that a fleet of clients
//   cut at the same instant does not come back at the same instant;
// - honours the server's drain hint {"op":"reconnect","after_ms":N} (waits
//   N ms after the close instead of the backoff), close code 1013 (try
//   again later: the backoff starts from a longer window) and, where the
//   WebSocket implementation exposes the failed handshake (npm ws), a 503's
//   Retry-After;
// - resubscribes every channel after a reconnect with (epoch, since) =
//   the last (epoch, seq) seen, so a durable channel's messages published
//   meanwhile arrive exactly once (a push at or below the last seq of the
//   same epoch is a duplicate and dropped);
// - never drops a push of another epoch: the channel's stream was
//   recreated (a pushd restart with the memory broker, a Redis flush,
//   expiry or restart without persistence) and counts from 1 again. The
//   client then emits "subscribed" with recovered:false (from the server's
//   subok, or itself when a live push shows the new epoch): what was
//   published in the old epoch after the last seq seen is gone, so the
//   application reloads its state;
// - emits "gap" for a hole within an epoch: the server's notice (drop
//   policy) or a seq that skips ahead;
// - sends a subscription again, on the same connection, when the server
//   answers it with err 5xx (a 4xx refusal drops it: it would be refused
//   again);
// - takes its JWT from options.token: a string, or a function returning
//   a string or a Promise of one, called on every connect and, when the
//   server hints {"op":"expiring","in_ms":N}, again after a random delay
//   in [0, N/4] (jitter: a fleet does not hit the token endpoint at once);
//   the new token goes back in band ({"op":"refresh"}), the connection
//   stays up. A token function that throws, rejects or returns nothing
//   emits "tokenError" ({error, phase: "connect" | "refresh"}); on connect
//   the client then backs off and retries;
// - detects dead connections: when nothing arrived for pingInterval it
//   sends {"op":"ping"}; when nothing (pong or push) arrives pongTimeout
//   later, it drops the socket and reconnects.
//
// - falls back to Server-Sent Events (transports: ["websocket", "sse"],
//   the default where EventSource exists) when a WebSocket attempt fails
//   before it opens (a proxy that strips or refuses Upgrade, a middlebox):
//   the next attempt uses the next transport, and a transport that opened
//   is kept. "open" says which one is in use ({transport}), and so does
//   client.transport. Over SSE the client opens GET /sse (the URL's /ws
//   path becomes /sse, ws: http:, wss: https:) with every channel in the
//   query: ch=<ch>, or pos=<ch>:<epoch>:<seq> to resume one, and the token
//   as ?token=. subscribe() and unsubscribe() on an open SSE connection
//   reconnect at once with the new channel set (positions kept, so
//   nothing is lost or repeated): SSE is one-way, and a reconnect needs
//   no server-side session to keep. Over SSE there is no ping (the
//   server's heartbeats are SSE comments, which EventSource does not
//   surface) and no in-band refresh: the stream ends with close code 4003
//   at the token's exp and the client reconnects with a fresh token().
//
// Limits: a browser cannot see the HTTP status of a refused handshake
// (401, 403, 503 all look like a 1006 close), so there the plain backoff
// applies.

/** Default options; see pushd.d.ts for each one's meaning. */
export const defaults = Object.freeze({
  protocols: ["pushd.v1"],
  baseDelay: 500,
  maxDelay: 30000,
  overloadDelay: 5000,
  maxHintDelay: 600000,
  connectTimeout: 10000,
  pingInterval: 25000,
  pongTimeout: 10000,
  stableAfter: 5000,
  reconnect: true,
  transports: ["websocket", "sse"],
});

const OPEN = 1;

/** PushdClient keeps one logical connection to pushd alive. */
export class PushdClient {
  /**
   * @param {string} url ws:// or wss:// URL of pushd's /ws endpoint
   * @param {object} [options] see pushd.d.ts (ClientOptions)
   */
  constructor(url, options = {}) {
    this.url = url;
    this.options = { ...defaults, ...options };
    this._WS = this.options.WebSocket ?? globalThis.WebSocket;
    this._ES = this.options.EventSource ?? globalThis.EventSource;
    const known = ["websocket", "sse"];
    for (const t of this.options.transports) {
      if (!known.includes(t)) throw new TypeError(`pushd: unknown transport ${JSON.stringify(t)} (want websocket or sse)`);
    }
    // Transports without an implementation here are skipped (Node 20 has
    // no EventSource).
    this._transports = this.options.transports.filter((t) => (t === "websocket" ? typeof this._WS === "function" : typeof this._ES === "function"));
    if (this._transports.length === 0) {
      throw new TypeError("pushd: no WebSocket implementation; pass options.WebSocket (e.g. the npm ws package on Node 20)");
    }
    this._tIdx = 0; // index in _transports of the one to dial next
    this._random = this.options.random ?? Math.random;
    this._now = this.options.now ?? (() => Date.now());
    this._handlers = new Map();
    this._subs = new Map(); // ch -> { last, epoch, live, retries, timer }
    this._sock = null;
    this._state = "idle";
    this._attempt = 0; // retries since the last stable connection
    this._attempts = 0; // connection attempts ever made
    this._hint = -1; // pending reconnect hint in ms, -1 none
    this._retryAfter = -1; // Retry-After seen on a refused handshake, ms
    this._timers = { retry: null, connect: null, heartbeat: null, refresh: null };
    this._tokenGen = 0; // bumps on every token fetch; stale results are ignored
    this._openedAt = 0;
    this._lastRx = 0;
    this._pingSentAt = 0;
    /** Counters, for tests and dashboards. */
    this.stats = { connects: 0, reconnects: 0, duplicates: 0, gaps: 0, messages: 0, deadConnections: 0, refreshes: 0 };
  }

  /** The client's state: idle, connecting, open, waiting (to reconnect) or closed. */
  get state() {
    return this._state;
  }

  /** The transport of the current or next connection: "websocket" or "sse". */
  get transport() {
    return this._transports[this._tIdx];
  }

  /** Starts connecting (connect() calls it); a no-op unless idle. */
  open() {
    if (this._state === "idle") this._connect();
    return this;
  }

  /**
   * Subscribes to ch. since: deliver the retained publications after this
   * seq first (0: all history); epoch: the epoch since counts in (from a
   * message or position() saved earlier). The subscription survives
   * reconnects.
   */
  subscribe(ch, { since, epoch } = {}) {
    if (typeof ch !== "string" || ch === "") throw new TypeError("pushd: channel must be a non-empty string");
    if (this._subs.has(ch)) throw new Error(`pushd: already subscribed to ${ch}`);
    if (since !== undefined && !(Number.isSafeInteger(since) && since >= 0)) {
      throw new TypeError("pushd: since must be a non-negative integer");
    }
    if (epoch !== undefined && !(typeof epoch === "string" && /^[0-9A-Za-z_-]{1,32}$/.test(epoch) && since !== undefined)) {
      throw new TypeError("pushd: epoch must be 1 to 32 characters of [0-9A-Za-z_-], given with since");
    }
    this._subs.set(ch, { last: since, epoch, live: false, retries: 0, timer: null });
    if (this._isOpen()) this._sendSub(ch);
    return this;
  }

  /** Unsubscribes from ch; nothing of ch is delivered afterwards. */
  unsubscribe(ch) {
    const sub = this._subs.get(ch);
    if (!sub) return this;
    clearTimeout(sub.timer);
    this._subs.delete(ch);
    if (this._isOpen()) this._send({ op: "unsub", ch });
    return this;
  }

  /** The last seq delivered (or skipped) on ch, undefined before any. */
  lastSeq(ch) {
    return this._subs.get(ch)?.last;
  }

  /**
   * The resume point of ch: { epoch, seq } (epoch undefined until the
   * server named one), or undefined before any. Save it to resume later
   * with subscribe(ch, { since: seq, epoch }).
   */
  position(ch) {
    const sub = this._subs.get(ch);
    if (!sub || sub.last === undefined) return undefined;
    return { epoch: sub.epoch || undefined, seq: sub.last };
  }

  /** Registers fn for event; returns a function that removes it. */
  on(event, fn) {
    if (!this._handlers.has(event)) this._handlers.set(event, new Set());
    this._handlers.get(event).add(fn);
    return () => this.off(event, fn);
  }

  /** Removes fn from event. */
  off(event, fn) {
    this._handlers.get(event)?.delete(fn);
    return this;
  }

  /** Closes for good: no reconnect after this. */
  close(code = 1000, reason = "") {
    if (this._state === "closed") return;
    this._state = "closed";
    this._clearTimers();
    const s = this._sock;
    this._sock = null;
    if (s) {
      this._detach(s);
      try {
        s.close(code, reason);
      } catch {
        // already closing
      }
      this._emit("close", { code, reason, wasClean: true, final: true });
    }
  }

  // --- connection life ---

  _connect() {
    this._state = "connecting";
    this._attempts++;
    this._hint = -1;
    this._retryAfter = -1;
    this._emit("connecting", { attempt: this._attempt, url: this.url, at: monotonic() });
    if (typeof this.options.token !== "function") {
      this._dial(this.options.token);
      return;
    }
    this._fetchToken("connect", (token) => {
      if (this._state === "connecting" && this._sock === null) this._dial(token);
    });
  }

  // _fetchToken calls options.token() (sync or async), bounded by
  // connectTimeout, and hands a non-empty string to done; a failure emits
  // tokenError and, on connect, schedules a reconnect. Results of an older
  // fetch (superseded, or the client closed) are dropped.
  _fetchToken(phase, done) {
    const gen = ++this._tokenGen;
    let settled = false;
    const fail = (error) => {
      if (settled || gen !== this._tokenGen || this._state === "closed") return;
      settled = true;
      clearTimeout(timer);
      const err = error instanceof Error ? error : new Error(`pushd: token: ${String(error)}`);
      this._emit("tokenError", { error: err, phase });
      if (phase === "connect" && this._state === "connecting" && this._sock === null) {
        this._scheduleReconnect({ code: 1006, reason: `token: ${err.message}`, wasClean: false });
      }
    };
    const ok = (token) => {
      if (settled || gen !== this._tokenGen || this._state === "closed") return;
      if (typeof token !== "string" || token === "") {
        fail(new Error("pushd: token() returned no token"));
        return;
      }
      settled = true;
      clearTimeout(timer);
      done(token);
    };
    const limit = this.options.connectTimeout;
    const timer = limit > 0 ? setTimeout(() => fail(new Error(`pushd: token() took longer than ${limit} ms`)), limit) : null;
    let v;
    try {
      v = this.options.token();
    } catch (error) {
      fail(error);
      return;
    }
    if (v !== null && typeof v === "object" && typeof v.then === "function") v.then(ok, fail);
    else ok(v);
  }

  // _onExpiring answers the server's expiring hint: after a jittered
  // delay, fetch a token and send it in band.
  _onExpiring(inMs) {
    if (typeof this.options.token !== "function") {
      this._emit("tokenError", { error: new Error("pushd: token expiring and options.token is not a function"), phase: "refresh" });
      return;
    }
    clearTimeout(this._timers.refresh);
    const window = Number.isFinite(inMs) && inMs > 0 ? inMs / 4 : 0;
    const s = this._sock;
    this._timers.refresh = setTimeout(() => {
      this._timers.refresh = null;
      if (s !== this._sock || !this._isOpen()) return;
      this._fetchToken("refresh", (token) => {
        if (s === this._sock && this._isOpen()) this._send({ op: "refresh", token });
      });
    }, this._random() * window);
  }

  _dial(token) {
    let s;
    try {
      if (this.transport === "sse") {
        s = new SSESocket(this, token);
        this._sock = s;
        this._opened = false;
        s.onopen = () => this._onOpen(s);
        s.onmessage = (e) => this._onMessage(s, e);
        s.onerror = (e) => this._emit("error", { error: e?.error ?? e });
        s.onclose = (e) => this._onClose(s, e);
        if (this.options.connectTimeout > 0) {
          this._timers.connect = setTimeout(() => this._drop(s, "connect timeout"), this.options.connectTimeout);
        }
        return;
      }
      const protocols = token ? [...this.options.protocols, `bearer.${token}`] : this.options.protocols;
      s = new this._WS(this.url, protocols);
    } catch (error) {
      this._emit("error", { error });
      this._scheduleReconnect({ code: 1006, reason: String(error), wasClean: false });
      return;
    }
    this._sock = s;
    this._opened = false;
    this._watchHandshake(s);
    s.onopen = () => this._onOpen(s);
    s.onmessage = (e) => this._onMessage(s, e);
    s.onerror = (e) => this._emit("error", { error: e?.error ?? e });
    s.onclose = (e) => this._onClose(s, { code: e?.code ?? 1006, reason: e?.reason ?? "", wasClean: !!e?.wasClean });
    if (this.options.connectTimeout > 0) {
      this._timers.connect = setTimeout(() => this._drop(s, "connect timeout"), this.options.connectTimeout);
    }
  }

  // _watchHandshake reads Retry-After from a refused handshake where the
  // implementation shows it (npm ws's unexpected-response event). Browsers
  // and undici do not expose it.
  _watchHandshake(s) {
    if (typeof s.on !== "function" || typeof s.terminate !== "function") return;
    s.on("unexpected-response", (req, res) => {
      const ra = res.headers?.["retry-after"];
      const secs = Number(ra);
      if (ra !== undefined && Number.isFinite(secs) && secs >= 0) this._retryAfter = secs * 1000;
      this._emit("error", { error: new Error(`pushd: handshake refused with HTTP ${res.statusCode}`), status: res.statusCode });
      res.resume?.();
      s.terminate(); // aborts the request; error and close follow
    });
  }

  _onOpen(s) {
    if (s !== this._sock) return;
    clearTimeout(this._timers.connect);
    this._state = "open";
    this._openedAt = this._now();
    this._lastRx = this._openedAt;
    this._pingSentAt = 0;
    this._opened = true;
    this.stats.connects++;
    if (this.stats.connects > 1) this.stats.reconnects++;
    this._emit("open", { attempt: this._attempt, protocol: s.protocol, transport: this.transport });
    for (const [ch, sub] of this._subs) {
      sub.live = false;
      // Over SSE the channels went in the URL; their subok events follow.
      if (this.transport !== "sse") this._sendSub(ch);
    }
    // A subscribe or unsubscribe while the stream was being opened: its
    // URL has another channel set, so open one with the current set.
    if (this.transport === "sse" && !sameKeys(s.channels, this._subs)) this._resubscribeSSE(s);
    this._heartbeat();
  }

  _onMessage(s, e) {
    if (s !== this._sock) return;
    this._lastRx = this._now();
    this._pingSentAt = 0;
    let m = e.parsed; // SSE: the push, already taken apart
    if (m === undefined) {
      if (typeof e.data !== "string") return; // pushd.v1 JSON mode sends text only
      try {
        m = JSON.parse(e.data);
      } catch (error) {
        this._emit("error", { error });
        return;
      }
    }
    if (m === null || typeof m !== "object") return;
    if (typeof m.op === "string") {
      this._onOp(m);
      return;
    }
    const sub = this._subs.get(m.ch);
    if (!sub) return; // unsubscribed meanwhile
    const seq = m.seq;
    const epoch = typeof m.epoch === "string" ? m.epoch : undefined;
    if (typeof seq === "number" && seq > 0) {
      if (epoch !== undefined && epoch !== sub.epoch) {
        // The channel's stream was recreated: its seqs count from 1
        // again. A known old epoch means what it published after
        // sub.last is gone: tell the application.
        const known = sub.epoch !== undefined && sub.epoch !== "";
        sub.epoch = epoch;
        sub.last = undefined;
        if (known) this._emit("subscribed", { ch: m.ch, epoch, seq: seq - 1, recovered: false });
      }
      if (sub.last !== undefined && seq <= sub.last) {
        this.stats.duplicates++;
        return;
      }
      if (sub.last !== undefined && seq > sub.last + 1) {
        this.stats.gaps++;
        this._emit("gap", { ch: m.ch, epoch: sub.epoch, from: sub.last + 1, to: seq - 1, detected: true });
      }
      sub.last = seq;
    }
    this.stats.messages++;
    this._emit("message", { ch: m.ch, epoch, seq, data: m.b64 === true ? decodeBase64(m.data) : m.data });
  }

  _onOp(m) {
    switch (m.op) {
      case "subok": {
        const sub = this._subs.get(m.ch);
        if (!sub) return;
        sub.live = true;
        sub.retries = 0;
        const epoch = typeof m.epoch === "string" ? m.epoch : undefined;
        if (epoch !== undefined && epoch !== sub.epoch && sub.last !== undefined && m.recovered === false) {
          // Another epoch: since meant nothing to the server, which sends
          // the new epoch's history from its start.
          sub.last = 0;
        }
        if (epoch !== undefined) sub.epoch = epoch;
        // Without since the server skipped to seq: resume from there.
        // With since, recovered pushes (seq <= m.seq) still follow.
        if (sub.last === undefined && typeof m.seq === "number") sub.last = m.seq;
        this._emit("subscribed", { ch: m.ch, epoch, seq: m.seq, recovered: m.recovered !== false });
        return;
      }
      case "unsubok":
        this._emit("unsubscribed", { ch: m.ch });
        return;
      case "unsubscribed":
        // The server ended it (e.g. a refreshed token no longer allows
        // it): not resubscribed after a reconnect.
        if (this._subs.has(m.ch)) {
          clearTimeout(this._subs.get(m.ch).timer);
          this._subs.delete(m.ch);
        }
        this._emit("unsubscribed", { ch: m.ch, reason: m.reason, server: true });
        return;
      case "expiring":
        this._emit("expiring", { inMs: m.in_ms });
        this._onExpiring(Number(m.in_ms));
        return;
      case "refreshok":
        this.stats.refreshes++;
        this._emit("refreshed", { exp: m.exp });
        return;
      case "pong":
        this._emit("pong", {});
        return;
      case "gap": {
        // The server dropped from..to for this client (drop policy): the
        // next push follows to, not a hole to report again.
        const sub = this._subs.get(m.ch);
        if (sub && typeof m.to === "number" && (m.epoch === undefined || m.epoch === sub.epoch) && (sub.last === undefined || m.to > sub.last)) {
          sub.last = m.to;
        }
        this.stats.gaps++;
        this._emit("gap", { ch: m.ch, epoch: m.epoch, from: m.from, to: m.to, detected: false });
        return;
      }
      case "reconnect": {
        const ms = Number(m.after_ms);
        if (Number.isFinite(ms) && ms >= 0) this._hint = Math.min(ms, this.options.maxHintDelay);
        this._emit("hint", { afterMs: this._hint });
        return;
      }
      case "err": {
        // A refused subscription is dropped (403, 404, 429 would be
        // refused again); a failed one (500: e.g. the node's broker is not
        // ready yet) is retried on this connection after a jittered delay.
        if (m.ch === undefined && (m.code === 401 || m.code === 403)) {
          // Only a refresh is refused without a channel and with 401/403.
          this._emit("tokenError", { error: new Error(`pushd: refresh refused: ${m.code} ${m.reason}`), phase: "refresh", code: m.code });
        }
        const sub = m.ch === undefined ? undefined : this._subs.get(m.ch);
        if (sub && !sub.live) {
          if (m.code >= 400 && m.code < 500) this._subs.delete(m.ch);
          else this._retrySub(m.ch, sub);
        }
        this._emit("error", { ch: m.ch, code: m.code, reason: m.reason });
        return;
      }
      default:
        return; // unknown ops are for newer clients
    }
  }

  _onClose(s, ev) {
    if (s !== this._sock) return;
    this._sock = null;
    this._detach(s);
    this._fallback();
    this._emit("close", { ...ev, final: false });
    this._scheduleReconnect(ev);
  }

  // _drop abandons a socket that is dead or never opened: its events are
  // ignored from now on (a dead peer would delay onclose for a long time).
  _drop(s, reason) {
    if (s !== this._sock) return;
    if (this._state === "open") this.stats.deadConnections++;
    this._sock = null;
    this._detach(s);
    try {
      if (typeof s.terminate === "function") s.terminate();
      else s.close(4000, reason);
    } catch {
      // already closing
    }
    this._fallback();
    const ev = { code: 1006, reason, wasClean: false };
    this._emit("close", { ...ev, final: false });
    this._scheduleReconnect(ev);
  }

  // _fallback moves to the next transport after an attempt that never
  // opened (the upgrade was refused or blocked); a transport that opened
  // is kept.
  _fallback() {
    if (this._opened || this._transports.length < 2) return;
    this._tIdx = (this._tIdx + 1) % this._transports.length;
  }

  // _resubscribeSSE reconnects an open SSE connection at once with the
  // current channel set (after subscribe or unsubscribe): once per turn
  // of the event loop, however many calls came.
  _resubscribeSSE(s) {
    if (s._resub) return;
    s._resub = true;
    queueMicrotask(() => {
      if (s !== this._sock || this._state !== "open") return;
      this._sock = null;
      this._detach(s);
      s.close(1000, "resubscribe");
      this._emit("close", { code: 1000, reason: "resubscribe", wasClean: true, final: false });
      this._connect();
    });
  }

  _detach(s) {
    s.onopen = s.onmessage = s.onclose = null;
    s.onerror = () => {};
    clearTimeout(this._timers.connect);
    clearTimeout(this._timers.heartbeat);
    clearTimeout(this._timers.refresh);
    for (const sub of this._subs.values()) {
      clearTimeout(sub.timer); // the next connection resubscribes everything
      sub.timer = null;
    }
  }

  // _scheduleReconnect picks the delay: the server's hint, a refused
  // handshake's Retry-After, or full jitter over the backoff window (a
  // longer one after 1013).
  _scheduleReconnect(ev) {
    if (this._state === "closed") return;
    if (!this.options.reconnect || (this.options.shouldReconnect && !this.options.shouldReconnect(ev))) {
      this._state = "closed";
      this._clearTimers();
      return;
    }
    if (this._openedAt > 0 && this._now() - this._openedAt >= this.options.stableAfter) this._attempt = 0;
    this._openedAt = 0;
    let delay;
    let cause;
    if (this._hint >= 0) {
      delay = this._hint;
      cause = "hint";
    } else if (this._retryAfter >= 0) {
      delay = this._retryAfter + this._random() * this.options.baseDelay;
      cause = "retry-after";
    } else {
      let window = Math.min(this.options.maxDelay, this.options.baseDelay * 2 ** Math.min(this._attempt, 30));
      cause = "backoff";
      if (ev.code === 1013) {
        window = Math.max(window, this.options.overloadDelay);
        cause = "overloaded";
      }
      delay = this._random() * window;
    }
    this._hint = -1;
    this._retryAfter = -1;
    this._attempt++;
    this._state = "waiting";
    this._emit("reconnecting", { attempt: this._attempt, delay, cause, code: ev.code });
    this._timers.retry = setTimeout(() => {
      this._timers.retry = null;
      if (this._state === "waiting") this._connect();
    }, delay);
  }

  // _heartbeat sends a ping after pingInterval without traffic and drops
  // the socket when pongTimeout more passes in silence. One timer per
  // client, re-armed only when it fires.
  _heartbeat() {
    clearTimeout(this._timers.heartbeat);
    const { pingInterval, pongTimeout } = this.options;
    const s = this._sock;
    if (!s || this._state !== "open" || !(pingInterval > 0) || this.transport === "sse") return;
    const now = this._now();
    let wait;
    if (this._pingSentAt > 0) {
      const due = this._pingSentAt + pongTimeout;
      if (now >= due) {
        this._drop(s, "no pong");
        return;
      }
      wait = due - now;
    } else {
      const due = this._lastRx + pingInterval;
      if (now >= due) {
        this._pingSentAt = now;
        this._send({ op: "ping" });
        wait = pongTimeout;
      } else {
        wait = due - now;
      }
    }
    this._timers.heartbeat = setTimeout(() => this._heartbeat(), wait);
  }

  // _retrySub sends ch's sub again after a full-jitter delay over a
  // window doubling per failure of this subscription.
  _retrySub(ch, sub) {
    clearTimeout(sub.timer);
    const window = Math.min(this.options.maxDelay, this.options.baseDelay * 2 ** Math.min(sub.retries++, 30));
    const delay = this._random() * window;
    sub.timer = setTimeout(() => {
      sub.timer = null;
      if (this._subs.get(ch) === sub && !sub.live && this._isOpen()) this._sendSub(ch);
    }, delay);
  }

  _sendSub(ch) {
    const sub = this._subs.get(ch);
    const msg = { op: "sub", ch };
    if (sub.last !== undefined) {
      msg.since = sub.last;
      if (sub.epoch) msg.epoch = sub.epoch;
    }
    this._send(msg);
  }

  _send(msg) {
    try {
      this._sock.send(JSON.stringify(msg));
    } catch (error) {
      this._emit("error", { error });
    }
  }

  _isOpen() {
    return this._state === "open" && this._sock !== null && this._sock.readyState === OPEN;
  }

  _clearTimers() {
    for (const k of Object.keys(this._timers)) {
      clearTimeout(this._timers[k]);
      this._timers[k] = null;
    }
  }

  _emit(event, arg) {
    const hs = this._handlers.get(event);
    if (!hs) return;
    for (const fn of [...hs]) {
      try {
        fn(arg);
      } catch (error) {
        if (event !== "error") this._emit("error", { error });
      }
    }
  }
}

// SSESocket carries a PushdClient's connection over EventSource (GET
// /sse) behind the part of the WebSocket API the client uses: channels
// and positions travel in the URL, pushes arrive as events named by their
// channel with id "<epoch>:<seq>", pushd's own messages (subok, gap,
// reconnect, close) as "pushd" events with the JSON a WebSocket gets.
class SSESocket {
  constructor(client, token) {
    this.protocol = "sse";
    this.readyState = 0;
    this.onopen = this.onmessage = this.onerror = this.onclose = null;
    this._client = client;
    this._lastId = "";
    this._closeEv = null;
    this._resub = false;
    const u = new URL(client.options.sseUrl ?? client.url);
    if (client.options.sseUrl === undefined) {
      if (u.protocol === "ws:") u.protocol = "http:";
      else if (u.protocol === "wss:") u.protocol = "https:";
      u.pathname = u.pathname.replace(/\/ws$/, "") + "/sse";
    }
    for (const k of ["ch", "since", "epoch", "pos", "format", "token", "last_event_id"]) u.searchParams.delete(k);
    this.channels = [...client._subs.keys()];
    for (const [ch, sub] of client._subs) {
      if (sub.last !== undefined) u.searchParams.append("pos", `${ch}:${sub.epoch ?? ""}:${sub.last}`);
      else u.searchParams.append("ch", ch);
    }
    if (token) u.searchParams.set("token", token);
    this.url = u.toString();
    const es = new client._ES(this.url);
    this._es = es;
    es.onopen = () => {
      this.readyState = OPEN;
      this.onopen?.({});
    };
    // EventSource reports every end (a refused request, a cut, the end of
    // the stream) as error; the client, not EventSource, reconnects.
    es.onerror = () => this._end({ code: 1006, reason: "", wasClean: false });
    es.addEventListener("pushd", (e) => {
      let m;
      try {
        m = JSON.parse(e.data);
      } catch (error) {
        this.onerror?.({ error });
        return;
      }
      if (m?.op === "close") {
        this._closeEv = { code: Number(m.code), reason: String(m.reason ?? ""), wasClean: true };
        return;
      }
      this.onmessage?.({ data: e.data, parsed: m });
    });
    for (const ch of client._subs.keys()) es.addEventListener(ch, (e) => this._push(ch, e));
  }

  _push(ch, e) {
    // An event without an id keeps the stream's last one: a repeated id
    // is an unsequenced push (sequenced ids never repeat on one stream).
    let epoch;
    let seq = 0;
    const id = e.lastEventId;
    if (id && id !== this._lastId) {
      const i = id.lastIndexOf(":");
      epoch = id.slice(0, i) || undefined;
      seq = Number(id.slice(i + 1));
    }
    this._lastId = id;
    let data = e.data;
    try {
      data = JSON.parse(e.data);
    } catch {
      // not JSON: the payload is the text itself
    }
    this.onmessage?.({ data: e.data, parsed: { ch, epoch, seq, data } });
  }

  send(text) {
    const m = JSON.parse(text);
    if (m.op === "sub" || m.op === "unsub") this._client._resubscribeSSE(this);
    // ping and refresh have no meaning on a one-way stream.
  }

  close(code = 1000, reason = "") {
    this._end({ code, reason, wasClean: true });
  }

  _end(ev) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this._es.close();
    this.onclose?.(this._closeEv ?? ev);
  }
}

/** connect builds a PushdClient and starts connecting. */
export function connect(url, options) {
  return new PushdClient(url, options).open();
}

// sameKeys reports whether list holds exactly map's keys.
function sameKeys(list, map) {
  return list.length === map.size && list.every((k) => map.has(k));
}

function monotonic() {
  return globalThis.performance?.now?.() ?? Date.now();
}

// decodeBase64 turns the data of a "b64":true push (a payload that is not
// valid UTF-8, sent as standard base64) back into its exact bytes. atob is
// in browsers, Node 16+, Deno and Bun; no dependency is needed.
function decodeBase64(s) {
  if (typeof s !== "string") return s;
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
