package main

import (
	"bytes"
	"testing"
)

func TestWSAcceptRFCExample(t *testing.T) {
	// RFC 6455 §1.3.
	got := wsAccept(nil, []byte("dGhlIHNhbXBsZSBub25jZQ=="))
	if string(got) != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("accept = %s", got)
	}
	if k := wsKey(nil, 1, 2, 3); len(k) != 24 || bytes.Equal(k, wsKey(nil, 1, 2, 4)) {
		t.Fatalf("key %s: want 24 bytes, distinct per attempt", k)
	}
}

func TestParseResponse(t *testing.T) {
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nsec-websocket-accept:  abc= \r\n\r\n\x81\x02hi"
	for cut := 0; cut < len(resp)-4; cut++ {
		if n, _, _ := parseResponse([]byte(resp[:cut])); n != 0 {
			t.Fatalf("cut %d: head complete early (%d)", cut, n)
		}
	}
	n, status, accept := parseResponse([]byte(resp))
	if n != len(resp)-4 || status != 101 || string(accept) != "abc=" {
		t.Fatalf("n=%d status=%d accept=%q", n, status, accept)
	}
}

func TestParseFrameSplit(t *testing.T) {
	long := bytes.Repeat([]byte("x"), 300)
	frames := [][]byte{
		append([]byte{0x81, 5}, "hello"...),
		append([]byte{0x81, 126, 1, 44}, long...),
		{0x88, 2, 0x03, 0xe9},
	}
	var all []byte
	for _, f := range frames {
		all = append(all, f...)
	}
	for split := 0; split <= len(all); split++ {
		// Feed the first part, keep the remainder like the loop's pend does.
		var got []frame
		buf := append([]byte(nil), all[:split]...)
		rest := all[split:]
		for {
			f, n, ok := parseFrame(buf)
			if !ok {
				t.Fatalf("split %d: refused", split)
			}
			if n == 0 {
				if len(rest) == 0 {
					break
				}
				buf = append(buf, rest...)
				rest = nil
				continue
			}
			f.payload = append([]byte(nil), f.payload...)
			got = append(got, f)
			buf = buf[n:]
		}
		if len(got) != 3 || string(got[0].payload) != "hello" || len(got[1].payload) != 300 || got[2].op != opClose {
			t.Fatalf("split %d: got %d frames", split, len(got))
		}
	}
	if _, _, ok := parseFrame([]byte{0x81, 0x85, 1, 2, 3, 4, 5}); ok {
		t.Fatal("masked server frame accepted")
	}
	if _, _, ok := parseFrame([]byte{0x82, 127, 0, 0, 0, 0, 1, 0, 0, 0}); ok {
		t.Fatal("frame above maxFrame accepted")
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	p := appendPayload(nil, kindGroup, 42, 1234567890123)
	env := append(append([]byte(`{"ch":"lt:g:3","seq":9,"data":`), p...), '}')
	for _, b := range [][]byte{p, env} {
		got, ok := parsePush(b)
		if !ok || got.kind != kindGroup || got.q != 42 || got.t != 1234567890123 {
			t.Fatalf("%s → %+v %v", b, got, ok)
		}
	}
	if _, ok := parsePush([]byte(`{"ch":"x","seq":1,"data":"plain"}`)); ok {
		t.Fatal("foreign push parsed")
	}
}

func TestMaskedFrame(t *testing.T) {
	f := maskedFrame(nil, opText, []byte(`{"op":"ping"}`))
	if f[0] != 0x81 || f[1] != 0x80|13 || len(f) != 2+4+13 {
		t.Fatalf("header % x", f[:2])
	}
	for i := range 13 {
		f[6+i] ^= f[2+i&3]
	}
	if string(f[6:]) != `{"op":"ping"}` {
		t.Fatalf("unmasked %q", f[6:])
	}
}

// TestMonoClockMatchesClockGettime: two independently built clocks (as in
// two processes) agree with CLOCK_MONOTONIC within 50 µs.
func TestMonoClockMatchesClockGettime(t *testing.T) {
	a, err := newMonoClock()
	if err != nil {
		t.Fatal(err)
	}
	b, err := newMonoClock()
	if err != nil {
		t.Fatal(err)
	}
	if d := a.now() - b.now(); d > 50_000 || d < -50_000 {
		t.Fatalf("clocks differ by %d ns", d)
	}
}
