'use strict';
// The npm ws peer of bench -peers: one Node process, an http server whose
// upgrade event hands GET /ws?ch=<channel> to a ws WebSocketServer
// (noServer, no compression), a Map of channel -> Set of sockets, and an
// admin http server with the API bench drives: POST /publish?ch= (one
// ws.send per subscriber, the payload as a text message), GET /stats and
// POST /debug/freeosmemory (global.gc; run with --expose-gc). It logs the
// same JSON "listening" lines as pushd on stderr. Flags: -listen host:port,
// -admin-listen host:port (default 127.0.0.1:0 each).
const http = require('http');
const { WebSocketServer } = require('ws');

function flag(name, def) {
  const i = process.argv.indexOf('-' + name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}

function hostPort(s) {
  const i = s.lastIndexOf(':');
  return { host: s.slice(0, i), port: Number(s.slice(i + 1)) };
}

const rooms = new Map();
let subscribed = 0;

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
const server = http.createServer((req, res) => {
  res.writeHead(404);
  res.end();
});
server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname !== '/ws') {
    socket.destroy();
    return;
  }
  const ch = url.searchParams.get('ch') || '';
  wss.handleUpgrade(req, socket, head, (ws) => {
    let room = rooms.get(ch);
    if (!room) {
      room = new Set();
      rooms.set(ch, room);
    }
    room.add(ws);
    subscribed++;
    ws.on('error', () => {});
    ws.on('close', () => {
      room.delete(ws);
      subscribed--;
      if (room.size === 0 && rooms.get(ch) === room) rooms.delete(ch);
    });
  });
});

const admin = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (req.method === 'POST' && url.pathname === '/publish') {
    const ch = url.searchParams.get('ch');
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      if (!ch || body.length === 0) {
        res.writeHead(400);
        res.end('ch and a body are required\n');
        return;
      }
      let n = 0;
      const room = rooms.get(ch);
      if (room) {
        for (const ws of room) {
          ws.send(body, { binary: false });
          n++;
        }
      }
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ delivered: n }) + '\n');
    });
    return;
  }
  if (req.method === 'GET' && url.pathname === '/stats') {
    const m = process.memoryUsage();
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ conns: subscribed, goroutines: 0, rss_bytes: m.rss, heap_inuse: m.heapUsed }) + '\n');
    return;
  }
  if (req.method === 'POST' && url.pathname === '/debug/freeosmemory') {
    if (global.gc) global.gc();
    res.writeHead(200);
    res.end('ok\n');
    return;
  }
  res.writeHead(404);
  res.end();
});

function listening(kind, srv) {
  const a = srv.address();
  process.stderr.write(JSON.stringify({ time: new Date().toISOString(), level: 'INFO', msg: 'listening', kind, addr: a.address + ':' + a.port }) + '\n');
}

const ws = hostPort(flag('listen', '127.0.0.1:0'));
const ad = hostPort(flag('admin-listen', '127.0.0.1:0'));
server.listen({ host: ws.host, port: ws.port, backlog: 4096 }, () => {
  listening('ws', server);
  admin.listen({ host: ad.host, port: ad.port }, () => listening('admin', admin));
});

function stop() {
  for (const c of wss.clients) c.terminate();
  server.close();
  admin.close();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
