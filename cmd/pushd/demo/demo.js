// demo.js: the QR-login page. It makes a random login nonce, shows the
// URL a phone would confirm as a QR code, subscribes to login:<nonce>
// with the pushd JS client and shows who signed in when the push arrives.
import { connect } from "/pushd.js";
import { encodeQR, qrSVGPath } from "/demo/qr/qr.js";

const $ = (id) => document.getElementById(id);
const cfg = JSON.parse($("pushd-demo-config").textContent);

// 16 random bytes, base64url: 128 bits nobody can guess.
const raw = crypto.getRandomValues(new Uint8Array(16));
const nonce = btoa(String.fromCharCode(...raw)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const channel = `login:${nonce}`;
const publishURL = `http://${cfg.admin}/publish?ch=${channel}`;

const q = encodeQR(publishURL, { ecc: "M" });
const border = 4;
const svg = $("qr");
svg.setAttribute("viewBox", `0 0 ${q.size + 2 * border} ${q.size + 2 * border}`);
svg.setAttribute("shape-rendering", "crispEdges");
const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
path.setAttribute("d", qrSVGPath(q, border));
svg.append(path);

const auth = cfg.needsApiKey ? ` -H "Authorization: Bearer $PUSHD_ADMIN_API_KEY"` : "";
$("channel").textContent = channel;
$("curl").textContent = `curl -XPOST${auth} '${publishURL}' -d '{"user":"alice"}'`;
$("rediscli").textContent = `redis-cli FCALL pushd_publish 1 'pushd:{${channel}}' '{"user":"alice"}'`;
Object.assign(document.body.dataset, { nonce, channel, qrText: publishURL, qrVersion: String(q.version) });

const setState = (state, text) => {
  document.body.dataset.state = state;
  $("status").textContent = text;
};
const conn = (up, text) => {
  $("conn").dataset.up = String(up);
  $("conn").textContent = text;
};

const wsURL = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
const client = connect(wsURL);
client.on("open", () => conn(true, `connected to ${wsURL}`));
client.on("reconnecting", (e) => conn(false, `reconnecting in ${(e.delay / 1000).toFixed(1)} s (${e.cause})`));
// since: 0 — a confirmation published before this page subscribed (or
// while it was reconnecting) still arrives from the channel's history.
client.subscribe(channel, { since: 0 });
client.on("subscribed", () => {
  if (document.body.dataset.state !== "signed-in") setState("waiting", "Waiting for the phone…");
});
client.on("error", (e) => {
  if (e.code) setState("error", `pushd refused ${e.ch ?? "the request"}: ${e.code} ${e.reason}`);
});
client.on("message", (m) => {
  const user = m.data !== null && typeof m.data === "object" ? m.data.user : m.data;
  setState("signed-in", `Signed in as ${user ?? "someone"} ✓`);
  document.body.dataset.user = String(user ?? "");
  client.close();
  conn(false, "done: the login channel is no longer needed");
});
