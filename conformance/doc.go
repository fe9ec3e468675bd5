// Package conformance judges the real pushd binary against WebSocket peers
// that we did not write.
//
// It owns only tests. Each test builds cmd/pushd with internal/pushdtest,
// starts it on 127.0.0.1:0 in -echo mode and drives it with independent
// clients: the Go libraries github.com/gorilla/websocket and
// github.com/coder/websocket, the npm packages ws and undici (scripts in
// node/, installed by `npm ci`), Debian's python3-websockets (script in
// python/, run with /usr/bin/python3) and headless Debian chromium through
// chromedp. A raw-frame client written here (handshake and masked frames by
// hand) covers the protocol violations no library will send, following the
// case groups of the Autobahn|Testsuite (framing, pings/pongs, reserved bits,
// opcodes, fragmentation, UTF-8, close handling, limits, misc); every
// failing case must end with the expected close code followed by the server
// closing TCP, so dropping TCP without a close frame fails.
//
// permessage-deflate (RFC 7692): the raw client also runs groups 12 and 13
// style cases (compressed payloads of every size, fragmented, parameter
// offers accepted and declined, RSV1 misuse, undecodable data, inflating
// past -max-message; rawdeflate_test.go), and npm ws (perMessageDeflate on
// and off, bytes on the wire compared), python3-websockets and headless
// Chromium receive compressed pushes from pushd in its normal mode
// (deflate_test.go, scripts node/pushpeer.js and python/pushpeer.py).
//
// The peers are installed by scripts/test.sh. A missing peer fails its test
// with a message that says so; PUSHD_SKIP_PEERS=chromium,node,python is the
// only way to skip peers on purpose (scripts/test.sh never sets it).
// PUSHD_CONFORMANCE_BIN=/path/to/pushd judges a prebuilt binary instead of a
// fresh build of cmd/pushd.
//
// It must never be imported: the package has no non-test code besides this
// comment, and server packages must not depend on the peers.
package conformance
