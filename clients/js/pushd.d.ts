// Types for pushd.js, the pushd.v1 client (browsers and Node >= 20).

/** The subset of the browser WebSocket API the client uses. */
export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol: string;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string; wasClean: boolean }) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket constructor: globalThis.WebSocket, or npm ws's on Node 20. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** The subset of the browser EventSource API the SSE transport uses. */
export interface EventSourceLike {
  onopen: ((ev: unknown) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  addEventListener(type: string, fn: (ev: { data: string; lastEventId: string }) => void): void;
  close(): void;
}

/** An EventSource constructor: globalThis.EventSource in browsers. */
export type EventSourceConstructor = new (url: string) => EventSourceLike;

/** How the client reaches pushd: a WebSocket on /ws, or Server-Sent Events on /sse. */
export type Transport = "websocket" | "sse";

export interface ClientOptions {
  /** WebSocket implementation; default globalThis.WebSocket (browsers, Node >= 22). */
  WebSocket?: WebSocketConstructor;
  /** EventSource implementation for the "sse" transport; default globalThis.EventSource (browsers). */
  EventSource?: EventSourceConstructor;
  /**
   * Transports in order of preference; default ["websocket", "sse"]. An
   * attempt that fails before it opens moves to the next one; one that
   * opened is kept. Transports with no implementation here are skipped.
   */
  transports?: Transport[];
  /** The SSE URL; default the WebSocket URL with ws: → http:, wss: → https: and the /ws path → /sse. */
  sseUrl?: string;
  /** Subprotocols offered; default ["pushd.v1"]. */
  protocols?: string[];
  /**
   * JWT offered as the subprotocol entry bearer.<token>. A function (which
   * may return a Promise) is called on every connect and, when the server
   * sends {"op":"expiring"}, again after a jittered delay; that token is
   * sent in band ({"op":"refresh"}) and the connection stays up. Failures
   * emit "tokenError".
   */
  token?: string | (() => string | Promise<string>);
  /** First retry window in ms (full jitter: a delay drawn in [0, window)); doubles per failed attempt. Default 500. */
  baseDelay?: number;
  /** Largest retry window in ms. Default 30000. */
  maxDelay?: number;
  /** Window after a 1013 (try again later) close, in ms. Default 5000. */
  overloadDelay?: number;
  /** Cap on the server's reconnect hint, in ms. Default 600000. */
  maxHintDelay?: number;
  /** Give up a connection attempt that has not opened after this many ms. Default 10000; 0 disables. */
  connectTimeout?: number;
  /** Send {"op":"ping"} after this many ms without any message. Default 25000; 0 disables the check. */
  pingInterval?: number;
  /** Drop the connection (and reconnect) when nothing arrives this many ms after a ping. Default 10000. */
  pongTimeout?: number;
  /** A connection open at least this long resets the backoff. Default 5000. */
  stableAfter?: number;
  /** Reconnect after losing the connection. Default true. */
  reconnect?: boolean;
  /** Called on every close that would reconnect; false stops the client. */
  shouldReconnect?: (ev: CloseEvent) => boolean;
  /** Random source in [0, 1) for the jitter; default Math.random. */
  random?: () => number;
  /** Clock in ms for the heartbeat; default Date.now. */
  now?: () => number;
}

export interface Message<T = unknown> {
  ch: string;
  /** The epoch seq counts in: the channel's stream id, new whenever the stream was recreated (sequenced pushes only). */
  epoch?: string;
  /** The channel's sequence number (durable channels; 0 or absent otherwise). */
  seq: number;
  /** The published payload: the JSON value, a string for other UTF-8 payloads, or a Uint8Array of the exact bytes for payloads that are not valid UTF-8 (sent as base64 with "b64":true). */
  data: T;
}

export interface CloseEvent {
  code: number;
  reason: string;
  wasClean: boolean;
  /** true when close() ended the client (no reconnect follows). */
  final?: boolean;
}

export interface ClientEvents {
  connecting: { attempt: number; url: string; at: number };
  open: { attempt: number; protocol: string; transport: Transport };
  message: Message;
  /**
   * subok, or a live push of a new epoch. recovered false: publications after
   * the last (epoch, seq) seen are gone (trimmed history, or the channel's
   * stream was recreated: a restart, a flush). Reload the application's state.
   */
  subscribed: { ch: string; epoch?: string; seq: number; recovered: boolean };
  /** unsubok, or (server: true) the server ended the subscription, e.g. a refreshed token no longer allows it. */
  unsubscribed: { ch: string; reason?: string; server?: boolean };
  /** The server's hint that the token expires in inMs ms; a refresh follows when token is a function. */
  expiring: { inMs: number };
  /** The server accepted an in-band refresh; exp is the new token's exp (Unix seconds). */
  refreshed: { exp: number };
  /** options.token threw, rejected, timed out or returned no token (phase connect: a reconnect follows), or the server refused a refresh (code 401/403). */
  tokenError: { error: Error; phase: "connect" | "refresh"; code?: number };
  /** Server err replies carry ch/code/reason; transport and handler errors carry error. */
  error: { ch?: string; code?: number; reason?: string; error?: unknown; status?: number };
  close: CloseEvent;
  /** A reconnect is scheduled after delay ms; cause: backoff, hint, overloaded (1013) or retry-after (503). */
  reconnecting: { attempt: number; delay: number; cause: "backoff" | "hint" | "overloaded" | "retry-after"; code: number };
  /** The server's drain hint {"op":"reconnect","after_ms":N}. */
  hint: { afterMs: number };
  /** Seqs from..to of epoch missed: dropped by the server's drop policy (detected false), or skipped (detected true). */
  gap: { ch: string; epoch?: string; from: number; to: number; detected: boolean };
  pong: Record<string, never>;
}

export type ClientState = "idle" | "connecting" | "open" | "waiting" | "closed";

export declare const defaults: Readonly<Required<Omit<ClientOptions, "WebSocket" | "EventSource" | "sseUrl" | "token" | "shouldReconnect" | "random" | "now">>>;

export declare class PushdClient {
  constructor(url: string, options?: ClientOptions);
  readonly url: string;
  readonly state: ClientState;
  /** The transport of the current (or next) connection. */
  readonly transport: Transport;
  readonly stats: { connects: number; reconnects: number; duplicates: number; gaps: number; messages: number; deadConnections: number; refreshes: number };
  /** Starts connecting; a no-op unless idle. */
  open(): this;
  /** Subscribes; since delivers the retained publications after it first (0: all), epoch names the epoch since counts in. Survives reconnects. */
  subscribe(ch: string, opts?: { since?: number; epoch?: string }): this;
  unsubscribe(ch: string): this;
  /** The last seq delivered or skipped on ch. */
  lastSeq(ch: string): number | undefined;
  /** The resume point of ch, for subscribe(ch, { since: seq, epoch }) later. */
  position(ch: string): { epoch?: string; seq: number } | undefined;
  on<E extends keyof ClientEvents>(event: E, fn: (ev: ClientEvents[E]) => void): () => void;
  off<E extends keyof ClientEvents>(event: E, fn: (ev: ClientEvents[E]) => void): this;
  /** Closes for good. */
  close(code?: number, reason?: string): void;
}

/** Builds a PushdClient and starts connecting. */
export declare function connect(url: string, options?: ClientOptions): PushdClient;
