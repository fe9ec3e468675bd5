// Helpers for the client's Node tests: the real pushd binary, a TCP proxy
// that can cut connections, and small waiting utilities.
import { spawn, execFileSync } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

let builtBin = "";

// pushdBin returns $PUSHD_BIN (set by clients/js/client_test.go), or
// builds cmd/pushd once when the tests run alone (npm test).
export function pushdBin() {
  if (process.env.PUSHD_BIN) return process.env.PUSHD_BIN;
  if (!builtBin) {
    const dir = mkdtempSync(join(tmpdir(), "pushd-js-"));
    builtBin = join(dir, "pushd");
    execFileSync("go", ["build", "-o", builtBin, "./cmd/pushd"], { cwd: repoRoot, stdio: "inherit" });
    process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
  }
  return builtBin;
}

// scale stretches time budgets on slow or loaded hosts (PUSHD_TEST_SCALE).
export const scale = Number(process.env.PUSHD_TEST_SCALE || 1);

// startPushd runs the pushd binary with args (on 127.0.0.1:0 unless
// -listen/-admin-listen are given) and resolves once both listeners are up.
export async function startPushd(args = [], { timeout = 20000 } = {}) {
  const argv = [...args, "-log-format", "json"];
  if (!args.includes("-listen")) argv.push("-listen", "127.0.0.1:0");
  if (!args.includes("-admin-listen")) argv.push("-admin-listen", "127.0.0.1:0");
  const child = spawn(pushdBin(), argv, { stdio: ["ignore", "pipe", "pipe"] });
  const lines = [];
  const p = { child, ws: "", admin: "", lines, exited: false };
  child.on("exit", () => {
    p.exited = true;
  });
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`pushd did not start in ${timeout} ms:\n${lines.join("\n")}`)), timeout * scale);
    child.on("exit", (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`pushd exited (${code ?? sig}) before listening:\n${lines.join("\n")}`));
    });
    for (const stream of [child.stdout, child.stderr]) {
      createInterface({ input: stream }).on("line", (line) => {
        lines.push(line);
        if (lines.length > 2000) lines.shift();
        let rec;
        try {
          rec = JSON.parse(line);
        } catch {
          return;
        }
        if (rec.msg !== "listening") return;
        if (rec.kind === "ws") p.ws = rec.addr;
        if (rec.kind === "admin") p.admin = rec.addr;
        if (p.ws && p.admin) {
          clearTimeout(timer);
          resolve();
        }
      });
    }
  });
  await ready;
  p.url = (path = "/ws") => `ws://${p.ws}${path}`;
  p.publish = (ch, body) => publish(p.admin, ch, body);
  // ready waits for GET /readyz 200 (with -redis: the Redis path works).
  p.ready = async (ms = 15000) => {
    const deadline = Date.now() + ms * scale;
    for (;;) {
      const res = await fetch(`http://${p.admin}/readyz`).catch(() => null);
      if (res?.status === 200) return;
      if (Date.now() > deadline) throw new Error(`pushd not ready after ${ms * scale} ms:\n${lines.slice(-20).join("\n")}`);
      await sleep(20);
    }
  };
  p.kill = async (signal = "SIGKILL") => {
    if (p.exited) return;
    const gone = once(child, "exit");
    child.kill(signal);
    await gone;
  };
  return p;
}

// publish POSTs body to pushd's admin /publish and returns the seq.
export async function publish(adminAddr, ch, body) {
  const res = await fetch(`http://${adminAddr}/publish?ch=${encodeURIComponent(ch)}`, {
    method: "POST",
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`publish ${ch}: HTTP ${res.status}: ${text}`);
  return JSON.parse(text).seq;
}

// waitFor polls cond every 10 ms until it is true or ms pass.
export async function waitFor(cond, ms, what) {
  const deadline = Date.now() + ms * scale;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms * scale} ms waiting for ${what}`);
    await sleep(10);
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Proxy forwards TCP connections to target; cut() destroys every proxied
// connection and, until restore(), new ones are destroyed on arrival (a
// network outage as the client sees it). It is also the stable front that
// restart tests put before pushd: the clients' address never changes, and
// the restarted pushd listens on a fresh 127.0.0.1:0 port that retarget()
// points the front at, so no test releases a port and binds it again
// (another process could take it in the gap).
export class Proxy {
  constructor(target) {
    this.target = target;
    this.down = false;
    this.socks = new Set();
    this.accepted = 0;
    this.server = net.createServer((c) => this._onConn(c));
  }

  async listen() {
    this.server.listen(0, "127.0.0.1");
    await once(this.server, "listening");
    this.addr = `127.0.0.1:${this.server.address().port}`;
    return this;
  }

  _onConn(c) {
    if (this.down) {
      c.destroy();
      return;
    }
    this.accepted++;
    const [host, port] = splitHostPort(this.target);
    const u = net.connect(port, host);
    for (const [a, b] of [[c, u], [u, c]]) {
      this.socks.add(a);
      a.on("error", () => b.destroy());
      a.on("close", () => {
        this.socks.delete(a);
        b.destroy();
      });
      a.pipe(b);
    }
  }

  cut() {
    this.down = true;
    for (const s of this.socks) s.destroy();
  }

  restore() {
    this.down = false;
  }

  // hold destroys new connections on arrival but leaves the open ones: the
  // gap while the server behind the proxy restarts, as a client sees it.
  hold() {
    this.down = true;
  }

  // retarget forwards new connections to target (a restarted server on its
  // own fresh :0 port) and ends a hold.
  retarget(target) {
    this.target = target;
    this.down = false;
  }

  async close() {
    this.cut();
    await new Promise((r) => this.server.close(r));
  }
}

export function splitHostPort(addr) {
  const i = addr.lastIndexOf(":");
  return [addr.slice(0, i).replace(/^\[|\]$/g, ""), Number(addr.slice(i + 1))];
}

// startRedis runs Debian's redis-server on a free loopback port (no
// persistence, or AOF with fsync always when aof is set) and resolves once
// it accepts connections. The handle can run redis-cli, signal the server
// (SIGSTOP/SIGCONT) and crash-restart it on the same port and dir.
export async function startRedis({ aof = false } = {}) {
  const probe = net.createServer().listen(0, "127.0.0.1");
  await once(probe, "listening");
  const port = probe.address().port;
  await new Promise((r) => probe.close(r));
  const dir = mkdtempSync(join(tmpdir(), "pushd-js-redis-"));
  const persist = aof ? ["--appendonly", "yes", "--appendfsync", "always"] : ["--appendonly", "no"];
  let child;
  const run = async () => {
    child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", ...persist, "--dir", dir], { stdio: ["ignore", "pipe", "pipe"] });
    const lines = [];
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis-server did not start:\n${lines.join("\n")}`)), 15000 * scale);
      child.on("error", (e) => reject(new Error(`redis-server: ${e.message} (scripts/test.sh installs it)`)));
      child.on("exit", (code) => reject(new Error(`redis-server exited (${code}):\n${lines.join("\n")}`)));
      createInterface({ input: child.stdout }).on("line", (line) => {
        lines.push(line);
        if (line.includes("Ready to accept connections")) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  };
  const kill = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const gone = once(child, "exit");
      child.kill("SIGKILL");
      await gone;
    }
  };
  await run();
  return {
    url: `redis://127.0.0.1:${port}/0`,
    port,
    cli: (...args) => execFileSync("redis-cli", ["-p", String(port), ...args], { encoding: "utf8" }).trim(),
    signal: (sig) => child.kill(sig),
    // restart crashes the server (kill -9) and starts it again.
    restart: async () => {
      await kill();
      await run();
    },
    stop: async () => {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
