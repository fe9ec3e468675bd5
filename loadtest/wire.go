package main

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"strconv"
)

// wsGUID is the RFC 6455 §1.3 constant appended to Sec-WebSocket-Key.
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// splitmix64 is a stateless mixer: keys and jitter are derived from
// (seed, connection, attempt) so nothing per connection is stored for them.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// wsKey returns the Sec-WebSocket-Key for (seed, conn, attempt): 16 bytes
// from splitmix64, base64 encoded (24 bytes), appended to dst.
func wsKey(dst []byte, seed uint64, conn uint32, attempt uint8) []byte {
	var raw [16]byte
	h := splitmix64(seed ^ uint64(conn)<<8 ^ uint64(attempt))
	binary.LittleEndian.PutUint64(raw[:8], h)
	binary.LittleEndian.PutUint64(raw[8:], splitmix64(h))
	return base64.StdEncoding.AppendEncode(dst, raw[:])
}

// wsAccept returns the Sec-WebSocket-Accept value expected for key (RFC
// 6455 §4.2.2), appended to dst.
func wsAccept(dst, key []byte) []byte {
	h := sha1.New()
	h.Write(key)
	h.Write([]byte(wsGUID))
	var sum [sha1.Size]byte
	return base64.StdEncoding.AppendEncode(dst, h.Sum(sum[:0]))
}

// upgradeRequest appends the HTTP/1.1 upgrade request for path (with its
// query) on host to dst.
func upgradeRequest(dst []byte, host, path string, key []byte) []byte {
	dst = append(dst, "GET "...)
	dst = append(dst, path...)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, host...)
	dst = append(dst, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: pushd.v1\r\nSec-WebSocket-Key: "...)
	dst = append(dst, key...)
	return append(dst, "\r\n\r\n"...)
}

// parseResponse looks for a complete HTTP response head in b. It returns
// the head length (0 when more bytes are needed), the status code and the
// Sec-WebSocket-Accept header value (a sub-slice of b).
func parseResponse(b []byte) (n, status int, accept []byte) {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		return 0, 0, nil
	}
	head := b[:end]
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	// "HTTP/1.1 101 Switching Protocols"
	if f := bytes.Fields(line); len(f) >= 2 {
		status, _ = strconv.Atoi(string(f[1]))
	}
	for len(rest) > 0 {
		var h []byte
		h, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		k, v, ok := bytes.Cut(h, []byte(":"))
		if ok && bytes.EqualFold(bytes.TrimSpace(k), []byte("Sec-WebSocket-Accept")) {
			accept = bytes.TrimSpace(v)
		}
	}
	return end + 4, status, accept
}

// WebSocket opcodes (RFC 6455 §5.2).
const (
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xA
)

// frame is one parsed server frame; payload aliases the input.
type frame struct {
	fin     bool
	op      byte
	payload []byte
}

// maxFrame bounds a server frame this client accepts (pushes are small;
// a larger frame is a protocol error, not an allocation).
const maxFrame = 64 << 10

// parseFrame parses one unmasked server frame from b (RFC 6455 §5.2). It
// returns the bytes consumed (0 when b holds only part of a frame) and
// ok=false for a frame this client refuses (masked, too large).
func parseFrame(b []byte) (f frame, n int, ok bool) {
	if len(b) < 2 {
		return f, 0, true
	}
	f.fin = b[0]&0x80 != 0
	f.op = b[0] & 0x0f
	if b[1]&0x80 != 0 {
		return f, 0, false // servers never mask (§5.1)
	}
	l := uint64(b[1] & 0x7f)
	hl := 2
	switch l {
	case 126:
		if len(b) < 4 {
			return f, 0, true
		}
		l, hl = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return f, 0, true
		}
		l, hl = binary.BigEndian.Uint64(b[2:]), 10
	}
	if l > maxFrame {
		return f, 0, false
	}
	if uint64(len(b)-hl) < l {
		return f, 0, true
	}
	f.payload = b[hl : hl+int(l)]
	return f, hl + int(l), true
}

// clientMask is the masking key of every frame this client sends. RFC 6455
// §5.3 wants it unpredictable to defeat proxy cache poisoning; a load
// generator on a trusted path does not need that, and a fixed key lets the
// ping frame be built once.
const clientMask = 0x37fa213d

// maskedFrame appends a masked client frame (op, payload ≤ 125 bytes).
func maskedFrame(dst []byte, op byte, payload []byte) []byte {
	var m [4]byte
	binary.BigEndian.PutUint32(m[:], clientMask)
	dst = append(dst, 0x80|op, 0x80|byte(len(payload)))
	dst = append(dst, m[:]...)
	for i, c := range payload {
		dst = append(dst, c^m[i&3])
	}
	return dst
}

// jsonInt returns the unsigned integer following key (e.g. `"q":`) in b,
// and whether it was found.
func jsonInt(b []byte, key string) (uint64, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0, false
	}
	i += len(key)
	for i < len(b) && b[i] == ' ' {
		i++
	}
	var v uint64
	start := i
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		v = v*10 + uint64(b[i]-'0')
		i++
	}
	return v, i > start
}

// payload kinds: a publication's "k" field.
const (
	kindPersonal = 'u'
	kindGroup    = 'g'
)

// appendPayload appends the JSON payload a publisher sends: kind, the
// per-channel sequence number q and the send time t (CLOCK_MONOTONIC ns).
func appendPayload(dst []byte, kind byte, q uint64, t int64) []byte {
	dst = append(dst, `{"k":"`...)
	dst = append(dst, kind)
	dst = append(dst, `","q":`...)
	dst = strconv.AppendUint(dst, q, 10)
	dst = append(dst, `,"t":`...)
	dst = strconv.AppendInt(dst, t, 10)
	return append(dst, '}')
}

// push is a parsed pushd.v1 push carrying a loadtest payload.
type push struct {
	kind byte
	q    uint64
	t    int64
}

// parsePush reads a push `{"ch":..,"seq":..,"data":{"k":"u","q":N,"t":T}}`
// (or the raw payload alone). ok is false for anything else.
func parsePush(b []byte) (p push, ok bool) {
	i := bytes.Index(b, []byte(`"k":"`))
	if i < 0 || i+5 >= len(b) {
		return p, false
	}
	p.kind = b[i+5]
	rest := b[i+5:]
	q, ok1 := jsonInt(rest, `"q":`)
	t, ok2 := jsonInt(rest, `"t":`)
	if !ok1 || !ok2 {
		return p, false
	}
	p.q, p.t = q, int64(t)
	return p, true
}
