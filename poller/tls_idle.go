package poller

import (
	"bytes"
	"crypto/tls"
	"reflect"
	"unsafe"
)

// Idle wss connections hold no record-sized buffers.
//
// crypto/tls keeps its input buffers (rawInput, the ciphertext; input, a
// reader over the decrypted record in rawInput; hand, handshake
// messages) for the connection's life, sized by the largest flight it
// ever read: measured with bench idle on pushd-wss, about 3.3 KiB per
// idle connection after the ClientHello. crypto/tls offers no way to
// release them, so the read side's owner does it, after every read that
// left them empty: the fields are found by name and type through reflect
// once per Server (tlsBufs), and a crypto/tls whose layout differs is
// simply not trimmed (tlsBufs.ok false; TestTLSIdleBuffersReleased then
// fails, so an upgrade of Go that moves them is noticed). Only the
// goroutine that owns the connection's read side calls tc.Read, and
// tc.Write never touches these fields, so the reset races with nothing.

// tlsBufs holds the offsets of crypto/tls.Conn's input buffers.
type tlsBufs struct {
	raw, input, hand uintptr
	ok               bool
}

// findTLSBufs locates rawInput, input and hand in crypto/tls.Conn.
func findTLSBufs() tlsBufs {
	t := reflect.TypeFor[tls.Conn]()
	buf, rd := reflect.TypeFor[bytes.Buffer](), reflect.TypeFor[bytes.Reader]()
	r, ok1 := t.FieldByName("rawInput")
	in, ok2 := t.FieldByName("input")
	h, ok3 := t.FieldByName("hand")
	if !ok1 || !ok2 || !ok3 || r.Type != buf || in.Type != rd || h.Type != buf {
		return tlsBufs{}
	}
	return tlsBufs{raw: r.Offset, input: in.Offset, hand: h.Offset, ok: true}
}

// release drops tc's input buffers when they hold nothing. Call it only
// from the owner of the connection's read side, never during tc.Read.
func (o tlsBufs) release(tc *tls.Conn) {
	if !o.ok {
		return
	}
	p := unsafe.Pointer(tc)
	raw := (*bytes.Buffer)(unsafe.Add(p, o.raw))
	in := (*bytes.Reader)(unsafe.Add(p, o.input))
	hand := (*bytes.Buffer)(unsafe.Add(p, o.hand))
	if in.Len() == 0 {
		// input is a reader over rawInput's memory: drop it first, or
		// the old buffer stays reachable through it.
		*in = bytes.Reader{}
		if raw.Len() == 0 && raw.Cap() > 0 {
			*raw = bytes.Buffer{}
		}
	}
	if hand.Len() == 0 && hand.Cap() > 0 {
		*hand = bytes.Buffer{}
	}
}

// held reports the bytes of buffer capacity tc keeps (tests).
func (o tlsBufs) held(tc *tls.Conn) int {
	if !o.ok {
		return -1
	}
	p := unsafe.Pointer(tc)
	return (*bytes.Buffer)(unsafe.Add(p, o.raw)).Cap() + (*bytes.Buffer)(unsafe.Add(p, o.hand)).Cap() +
		int((*bytes.Reader)(unsafe.Add(p, o.input)).Size())
}
