package conformance

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
)

// Opcodes (RFC 6455 §5.2).
const (
	opCont   byte = 0x0
	opText   byte = 0x1
	opBinary byte = 0x2
	opClose  byte = 0x8
	opPing   byte = 0x9
	opPong   byte = 0xA
)

// rawFrame is one frame as written by the raw client or read from pushd.
// Zero value FIN is false; use the constructors below.
type rawFrame struct {
	fin     bool
	rsv     byte // 0..7, RSV1 is the high bit
	op      byte
	payload []byte
	// length overrides the encoded payload length when >= 0 (for frames
	// whose payload is sent only in part); -1 means len(payload).
	length int64
	// noMask sends the frame unmasked (a protocol violation).
	noMask bool
	// msb encodes the length in the 64-bit form with its most significant
	// bit set (RFC 6455 §5.2 forbids it).
	msb bool
}

func frame(op byte, fin bool, payload []byte) rawFrame {
	return rawFrame{fin: fin, op: op, payload: payload, length: -1}
}

func text(s string) rawFrame           { return frame(opText, true, []byte(s)) }
func textB(b []byte) rawFrame          { return frame(opText, true, b) }
func binFrame(b []byte) rawFrame       { return frame(opBinary, true, b) }
func ping(b []byte) rawFrame           { return frame(opPing, true, b) }
func pong(b []byte) rawFrame           { return frame(opPong, true, b) }
func cont(fin bool, b []byte) rawFrame { return frame(opCont, fin, b) }

// closeFrame builds a close frame with a status code and reason.
func closeFrame(code uint16, reason string) rawFrame {
	p := binary.BigEndian.AppendUint16(nil, code)
	return frame(opClose, true, append(p, reason...))
}

// encode appends the wire form of f: masked with a random key unless
// f.noMask (RFC 6455 §5.2, §5.3). This tiny encoder is ours on purpose: it
// can write anything, including frames no library would produce.
func (f rawFrame) encode(dst []byte) []byte {
	b0 := f.op&0x0F | (f.rsv&7)<<4
	if f.fin {
		b0 |= 0x80
	}
	n := int64(len(f.payload))
	if f.length >= 0 {
		n = f.length
	}
	var mask byte = 0x80
	if f.noMask {
		mask = 0
	}
	switch {
	case f.msb:
		dst = append(dst, b0, mask|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n)|1<<63)
	case n <= 125:
		dst = append(dst, b0, mask|byte(n))
	case n <= 0xFFFF:
		dst = append(dst, b0, mask|126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	default:
		dst = append(dst, b0, mask|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	if f.noMask {
		return append(dst, f.payload...)
	}
	var key [4]byte
	_, _ = rand.Read(key[:])
	dst = append(dst, key[:]...)
	start := len(dst)
	dst = append(dst, f.payload...)
	for i := range f.payload {
		dst[start+i] ^= key[i&3]
	}
	return dst
}

// wire concatenates the encoded frames.
func wire(frames ...rawFrame) []byte {
	var b []byte
	for _, f := range frames {
		b = f.encode(b)
	}
	return b
}

// rawConn is a WebSocket client connection driven byte by byte. It is not
// goroutine safe except that sendAsync may overlap reads.
type rawConn struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

// dialRaw connects to addr and performs the opening handshake by hand
// (RFC 6455 §4.1), checking the 101 response and Sec-WebSocket-Accept.
func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	r, ext := dialRawOffer(t, addr, "")
	if ext != "" {
		t.Fatalf("handshake: unrequested extension %q", ext)
	}
	return r
}

// dialRawOffer is dialRaw offering the Sec-WebSocket-Extensions value
// offer (none when empty); it returns the server's answer.
func dialRawOffer(t testing.TB, addr, offer string) (*rawConn, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	var k [16]byte
	_, _ = rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	req := "GET /raw HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n"
	if offer != "" {
		req += "Sec-WebSocket-Extensions: " + offer + "\r\n"
	}
	req += "\r\n"
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatalf("write handshake: %v", err)
	}
	br := bufio.NewReaderSize(c, 64<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read handshake response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: status %s, want 101", resp.Status)
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), base64.StdEncoding.EncodeToString(sum[:]); got != want {
		t.Fatalf("handshake: Sec-WebSocket-Accept %q, want %q", got, want)
	}
	if !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") {
		t.Fatalf("handshake: Upgrade %q", resp.Header.Get("Upgrade"))
	}
	if p := resp.Header.Get("Sec-WebSocket-Protocol"); p != "" {
		t.Fatalf("handshake: unrequested subprotocol %q", p)
	}
	_ = c.SetDeadline(time.Time{})
	return &rawConn{t: t, c: c, br: br}, resp.Header.Get("Sec-WebSocket-Extensions")
}

// send writes b in one write. Write errors are logged, not fatal: a server
// may close before it has read everything, and reads judge the outcome.
func (r *rawConn) send(b []byte) {
	r.t.Helper()
	_ = r.c.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if _, err := r.c.Write(b); err != nil {
		r.t.Logf("write %d bytes: %v", len(b), err)
	}
}

// sendFrames writes the frames in one write.
func (r *rawConn) sendFrames(frames ...rawFrame) { r.t.Helper(); r.send(wire(frames...)) }

// sendChopped writes b in chops of n bytes (separate writes, TCP_NODELAY is
// on), sleeping pause between them.
func (r *rawConn) sendChopped(b []byte, n int, pause time.Duration) {
	r.t.Helper()
	_ = r.c.SetWriteDeadline(time.Now().Add(60 * time.Second))
	for len(b) > 0 {
		k := min(n, len(b))
		if _, err := r.c.Write(b[:k]); err != nil {
			r.t.Logf("chopped write: %v", err)
			return
		}
		b = b[k:]
		if pause > 0 && len(b) > 0 {
			time.Sleep(pause)
		}
	}
}

// sendAsync writes b from another goroutine and returns a channel closed
// when the write ends; for sends during which pushd may close.
func (r *rawConn) sendAsync(b []byte) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.c.SetWriteDeadline(time.Now().Add(60 * time.Second))
		_, _ = r.c.Write(b)
	}()
	r.t.Cleanup(func() { r.c.Close(); <-done })
	return done
}

// errServerMasked: pushd sent a masked frame (RFC 6455 §5.1 forbids it).
var errServerMasked = errors.New("server frame is masked")

// readFrame reads one frame from pushd within timeout.
func (r *rawConn) readFrame(timeout time.Duration) (rawFrame, error) {
	_ = r.c.SetReadDeadline(time.Now().Add(timeout))
	var h [2]byte
	if _, err := io.ReadFull(r.br, h[:]); err != nil {
		return rawFrame{}, err
	}
	f := rawFrame{fin: h[0]&0x80 != 0, rsv: h[0] >> 4 & 7, op: h[0] & 0x0F, length: -1}
	n := int64(h[1] & 0x7F)
	switch n {
	case 126:
		var e [2]byte
		if _, err := io.ReadFull(r.br, e[:]); err != nil {
			return f, err
		}
		n = int64(binary.BigEndian.Uint16(e[:]))
	case 127:
		var e [8]byte
		if _, err := io.ReadFull(r.br, e[:]); err != nil {
			return f, err
		}
		u := binary.BigEndian.Uint64(e[:])
		if u > 1<<40 {
			return f, fmt.Errorf("server frame length %d", u)
		}
		n = int64(u)
	}
	if h[1]&0x80 != 0 {
		return f, errServerMasked
	}
	f.payload = make([]byte, n)
	if _, err := io.ReadFull(r.br, f.payload); err != nil {
		return f, fmt.Errorf("read %d-byte payload: %w", n, err)
	}
	return f, nil
}

func opName(op byte) string {
	switch op {
	case opCont:
		return "continuation"
	case opText:
		return "text"
	case opBinary:
		return "binary"
	case opClose:
		return "close"
	case opPing:
		return "ping"
	case opPong:
		return "pong"
	}
	return fmt.Sprintf("opcode %d", op)
}

func (f rawFrame) String() string {
	s := fmt.Sprintf("%s fin=%v rsv=%d len=%d", opName(f.op), f.fin, f.rsv, len(f.payload))
	if f.op == opClose && len(f.payload) >= 2 {
		s += fmt.Sprintf(" code=%d reason=%q", binary.BigEndian.Uint16(f.payload), f.payload[2:])
	}
	return s
}

// next reads the next frame, failing the test on any read error or on a
// server frame that breaks RFC 6455 (mask, RSV, fragmentation: pushd's echo
// always sends one FIN frame per message).
func (r *rawConn) next(what string) rawFrame {
	r.t.Helper()
	f, err := r.readFrame(raceScale(10 * time.Second))
	if err != nil {
		r.t.Fatalf("waiting for %s: %v (did the server drop TCP without a close frame?)", what, err)
	}
	if f.rsv != 0 || !f.fin {
		r.t.Fatalf("waiting for %s: server sent %v", what, f)
	}
	return f
}

// expectMessage reads one frame and requires a data message op with
// payload p; keepalive pings before it are answered.
func (r *rawConn) expectMessage(op byte, p []byte) {
	r.t.Helper()
	what := fmt.Sprintf("%s echo of %d bytes", opName(op), len(p))
	f := r.next(what)
	for f.op == opPing && op != opPing {
		// pushd's keepalive may come first when the exchange outlasts
		// -ping-interval (a large echo on a busy machine): answer it.
		r.sendFrames(pong(f.payload))
		f = r.next(what)
	}
	if f.op != op || !bytes.Equal(f.payload, p) {
		r.t.Fatalf("waiting for %s: got %v (payload equal: %v)", what, f, bytes.Equal(f.payload, p))
	}
}

// expectPong reads one frame and requires a pong echoing p.
func (r *rawConn) expectPong(p []byte) {
	r.t.Helper()
	f := r.next("pong")
	if f.op != opPong || !bytes.Equal(f.payload, p) {
		r.t.Fatalf("waiting for pong %.64q: got %v payload %.64q", p, f, f.payload)
	}
}

// expectClose requires the next frame to be a close frame with code want,
// answers it with a close frame (as a client must, RFC 6455 §5.5.1) and
// then requires pushd to close TCP within a bound.
func (r *rawConn) expectClose(want uint16) {
	r.t.Helper()
	f := r.next(fmt.Sprintf("close %d", want))
	if f.op != opClose {
		r.t.Fatalf("want close %d, got %v", want, f)
	}
	var got uint16 = 1005
	if len(f.payload) >= 2 {
		got = binary.BigEndian.Uint16(f.payload)
	}
	if len(f.payload) == 1 || len(f.payload) > 125 || !utf8.Valid(f.payload[min(2, len(f.payload)):]) {
		r.t.Errorf("server close frame is malformed: % x", f.payload)
	}
	if got != want {
		r.t.Errorf("close code %d (frame %v), want %d", got, f, want)
	}
	r.send(wire(closeFrame(got, "")))
	r.expectTCPClosed()
}

// expectTCPClosed requires pushd to close the connection (EOF or reset)
// without sending anything more.
func (r *rawConn) expectTCPClosed() {
	r.t.Helper()
	bound := raceScale(5 * time.Second)
	_ = r.c.SetReadDeadline(time.Now().Add(bound))
	var buf [512]byte
	n, err := r.br.Read(buf[:])
	switch {
	case n > 0:
		r.t.Errorf("server sent %d bytes after its close frame: % x", n, buf[:min(n, 32)])
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
	case errors.Is(err, os.ErrDeadlineExceeded):
		r.t.Errorf("server did not close TCP within %v after the close handshake", bound)
	default:
		r.t.Errorf("after close: %v", err)
	}
}

// expectNothing requires that pushd sends nothing within d.
func (r *rawConn) expectNothing(d time.Duration) {
	r.t.Helper()
	f, err := r.readFrame(d)
	if err == nil {
		r.t.Fatalf("want no frame within %v, got %v", d, f)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		r.t.Fatalf("want no frame within %v, got %v", d, err)
	}
}

// closeOK runs the normal close handshake: send close 1000 and require the
// echo and the server's TCP close.
func (r *rawConn) closeOK() {
	r.t.Helper()
	r.sendFrames(closeFrame(1000, "bye"))
	r.expectCloseNoReply(1000)
}

// expectCloseNoReply is expectClose for a close the client initiated: no
// second close frame is sent.
func (r *rawConn) expectCloseNoReply(want uint16) {
	r.t.Helper()
	f := r.next(fmt.Sprintf("close %d", want))
	if f.op != opClose {
		r.t.Fatalf("want close %d, got %v", want, f)
	}
	var got uint16 = 1005
	if len(f.payload) >= 2 {
		got = binary.BigEndian.Uint16(f.payload)
	}
	if got != want {
		r.t.Errorf("close code %d (frame %v), want %d", got, f, want)
	}
	r.expectTCPClosed()
}
