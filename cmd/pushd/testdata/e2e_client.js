// e2e_client.js: an independent npm `ws` client for publish_e2e_test.go.
// Usage: node e2e_client.js <ws-url-with-?ch=A> <channel B> <pushes>
// Subscribes to A via the URL and to B with a {"op":"sub"} request, prints
// READY once both subok replies arrived, then prints every message it
// receives as one line and exits after <pushes> pushes.
'use strict';
const WebSocket = require('ws');
const [url, chB, want] = process.argv.slice(2);
// No subprotocol offered: pushd.v1 is the default.
const ws = new WebSocket(url);
let suboks = 0;
let pushes = 0;
const timer = setTimeout(() => { console.log('TIMEOUT'); process.exit(3); }, 20000);
ws.on('message', (data, isBinary) => {
  const text = data.toString();
  console.log((isBinary ? 'BIN ' : 'MSG ') + text);
  const m = JSON.parse(text);
  if (m.op === 'subok') {
    suboks++;
    if (suboks === 1) ws.send(JSON.stringify({ op: 'sub', ch: chB }));
    if (suboks === 2) console.log('READY');
    return;
  }
  if (m.op === undefined && ++pushes === Number(want)) {
    clearTimeout(timer);
    ws.close(1000);
  }
});
ws.on('close', (code) => { console.log('CLOSE ' + code); process.exit(0); });
ws.on('error', (err) => { console.log('ERROR ' + err.message); process.exit(2); });
