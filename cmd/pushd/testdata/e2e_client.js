// e2e_client.js: an independent npm `ws` client for publish_e2e_test.go.
// Usage: node e2e_client.js <ws-url-with-?ch=A> <channel B> <pushes>
// Subscribes to A via the URL (no reply) and to B with a {"op":"sub"}
// request, prints READY on B's subok (the URL subscription is live before
// any op is answered), then prints every message it receives as one line
// and exits after <pushes> pushes. It offers subprotocol pushd.v1.
'use strict';
const WebSocket = require('ws');
const [url, chB, want] = process.argv.slice(2);
const ws = new WebSocket(url, ['pushd.v1']);
let pushes = 0;
const timer = setTimeout(() => { console.log('TIMEOUT'); process.exit(3); }, 20000);
ws.on('open', () => {
  console.log('PROTOCOL ' + ws.protocol);
  ws.send(JSON.stringify({ op: 'sub', ch: chB }));
});
ws.on('message', (data, isBinary) => {
  const text = data.toString();
  console.log((isBinary ? 'BIN ' : 'MSG ') + text);
  const m = JSON.parse(text);
  if (m.op === 'subok') {
    console.log('READY');
    return;
  }
  if (m.op === undefined && ++pushes === Number(want)) {
    clearTimeout(timer);
    ws.close(1000);
  }
});
ws.on('close', (code) => { console.log('CLOSE ' + code); process.exit(0); });
ws.on('error', (err) => { console.log('ERROR ' + err.message); process.exit(2); });
