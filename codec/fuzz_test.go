package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// Fuzz targets. Seeds come from the table tests (f.Add below) and from the
// committed corpora under testdata/fuzz/<FuzzName>/. Run one at a time:
//
//	go test ./codec -run='^$' -fuzz='^FuzzParseSplit$' -fuzztime=60s -fuzzminimizetime=10s
//
// (minimizing a large new input can otherwise take the whole run).

// fuzzConfig derives a Config from one fuzzed byte.
func fuzzConfig(bits byte) *Config {
	cfg := &Config{
		Role:      Role(bits & 1),
		AllowRSV1: bits&2 != 0,
	}
	if bits&4 != 0 {
		cfg.MaxFrameSize = int64(bits>>3) * 8
	}
	if bits&0x80 != 0 {
		cfg.MaxMessageSize = int64(bits&0x78) * 2
	}
	return cfg
}

func FuzzParseHeader(f *testing.F) {
	for _, tc := range parserCases() {
		f.Add(tc.stream[:min(len(tc.stream), 14)])
	}
	f.Add([]byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, data []byte) {
		h, n, err := ParseHeader(data)
		need := NeedHeaderBytes(data)
		switch {
		case err == ErrShortHeader:
			if len(data) >= need {
				t.Fatalf(
					"short with %d bytes, need %d",
					len(data), need)
			}
			return
		case err == ErrLengthMSB:
			if need != len(data[:need]) || data[1]&0x7f != 127 || data[2]&0x80 == 0 {
				t.Fatalf(
					"MSB error on % x",
					data)
			}
			return
		case err != nil:
			t.Fatalf(
				"unexpected error %v",
				err)
		}
		if n != need || n > len(data) || n < 2 || n > ws.MaxHeaderSize {
			t.Fatalf(
				"n=%d need=%d len=%d",
				n, need, len(data))
		}
		// gobwas/ws reads the same header.
		ref, rerr := ws.ReadHeader(bytes.NewReader(data))
		if rerr != nil || ref != h {
			t.Fatalf(
				"ParseHeader = %+v, gobwas = %+v, %v",
				h, ref, rerr)
		}
		// Re-encoding (always minimal) parses back to the same header.
		buf := make([]byte, ws.MaxHeaderSize)
		m := WriteHeader(buf, h)
		h2, n2, err := ParseHeader(buf[:m])
		if err != nil || n2 != m || h2 != h || m > n {
			t.Fatalf(
				"re-encode %+v: % x -> %+v, %d, %v",
				h, buf[:m], h2, n2, err)
		}
	})
}

func FuzzParseSplit(f *testing.F) {
	for i, tc := range parserCases() {
		if len(tc.stream) > 4096 {
			continue
		}
		bits := byte(0)
		if tc.cfg != nil {
			bits = byte(tc.cfg.Role)
			if tc.cfg.AllowRSV1 {
				bits |= 2
			}
		}
		f.Add(tc.stream, bits, uint16(i), uint16(len(tc.stream)/2))
	}
	f.Fuzz(func(t *testing.T, stream []byte, cfgBits byte, cut1, cut2 uint16) {
		cfg := fuzzConfig(cfgBits)
		one, err := feedPieces(cfg, [][]byte{bytes.Clone(stream)})
		if err != nil {
			t.Fatalf(
				"one shot: %v",
				err)
		}
		a, b := int(cut1)%(len(stream)+1), int(cut2)%(len(stream)+1)
		if a > b {
			a, b = b, a
		}
		split, err := feedPieces(cfg, splitAt(stream, a, b))
		if err != nil {
			t.Fatalf(
				"split %d/%d: %v",
				a, b, err)
		}
		if !one.equal(split) {
			t.Fatalf(
				"split %d/%d differs:\none:   %v %v %v\nsplit: %v %v %v",
				a, b, one.Frames, one.Err, one.InFrame, split.Frames, split.Err, split.InFrame)
		}
		if len(stream) <= 256 {
			bb, err := feedPieces(cfg, byteByByte(stream))
			if err != nil {
				t.Fatalf(
					"byte by byte: %v",
					err)
			}
			if !one.equal(bb) {
				t.Fatalf(
					"byte by byte differs:\none: %v %v\nbb:  %v %v",
					one.Frames, one.Err, bb.Frames, bb.Err)
			}
		}
		// Every error carries a close code.
		if one.Err != nil {
			var e *Error
			if !errors.As(one.Err, &e) || e.Code < 1002 || e.Code > 1009 {
				t.Fatalf(
					"error %v has no protocol close code",
					one.Err)
			}
		}
		// Text messages delivered whole are valid UTF-8.
		var msg []byte
		for _, fr := range one.Frames {
			if fr.MsgOp != ws.OpText || fr.Compressed {
				continue
			}
			msg = append(msg, fr.Payload...)
			if fr.MsgEnd {
				if !utf8.Valid(msg) {
					t.Fatalf(
						"invalid UTF-8 text message accepted: %q",
						msg)
				}
				msg = msg[:0]
			}
		}
	})
}

func FuzzUnmaskChunks(f *testing.F) {
	f.Add([]byte("Hello"), uint32(0x3d21fa37), uint8(0), uint16(2), uint16(3))
	f.Add(bytes.Repeat([]byte{0xaa}, 300), uint32(0xdeadbeef), uint8(3), uint16(67), uint16(200))
	f.Add(bytes.Repeat([]byte("x"), 300), uint32(1), uint8(1), uint16(255), uint16(256))
	f.Fuzz(func(t *testing.T, data []byte, k uint32, off uint8, cut1, cut2 uint16) {
		var key [4]byte
		binary.LittleEndian.PutUint32(key[:], k)
		want := bytes.Clone(data)
		wantOff := naiveUnmask(want, key, int(off)%4)

		one := bytes.Clone(data)
		oneOff := Unmask(one, key, int(off))

		a, b := int(cut1)%(len(data)+1), int(cut2)%(len(data)+1)
		if a > b {
			a, b = b, a
		}
		chunked := bytes.Clone(data)
		o := Unmask(chunked[:a], key, int(off))
		o = Unmask(chunked[a:b], key, o)
		o = Unmask(chunked[b:], key, o)

		if !bytes.Equal(one, want) || oneOff != wantOff {
			t.Fatalf(
				"one-shot differs from the oracle (len=%d off=%d)",
				len(data), off)
		}
		if !bytes.Equal(chunked, want) || o != wantOff {
			t.Fatalf(
				"chunked %d/%d differs from one-shot (len=%d off=%d)",
				a, b, len(data), off)
		}
		// The ASCII flag used by the parser is exact.
		flag := bytes.Clone(data)
		_, hi := unmask(flag, key, int(off))
		ascii := true
		for _, c := range want {
			ascii = ascii && c < 0x80
		}
		if (hi == 0) != ascii {
			t.Fatalf(
				"hi=%#x, ascii=%v",
				hi, ascii)
		}
	})
}

func FuzzUTF8(f *testing.F) {
	for _, tc := range utf8Cases {
		f.Add([]byte(tc.in), uint16(len(tc.in)/2))
	}
	f.Add([]byte(strings.Repeat("héllo wörld € 😀 ", 10)), uint16(33))
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		want := utf8.Valid(data)
		if validUTF8(data) != want {
			t.Fatalf(
				"validUTF8 = %v, utf8.Valid = %v",
				!want, want)
		}
		var whole UTF8
		if got := whole.Write(data) && whole.Complete(); got != want {
			t.Fatalf(
				"whole: %v, utf8.Valid: %v",
				got, want)
		}
		c := int(cut) % (len(data) + 1)
		var split UTF8
		if got := split.Write(data[:c]) && split.Write(data[c:]) && split.Complete(); got != want {
			t.Fatalf(
				"split at %d: %v, utf8.Valid: %v",
				c, got, want)
		}
		// Fail fast: byte by byte, the first rejected byte ends a prefix
		// that no continuation can make valid, and every accepted prefix
		// can still be completed (checked by appending the right number of
		// continuation bytes would need the state; instead check that the
		// prefix before it is a valid prefix per utf8.FullRune/utf8.Valid).
		var step UTF8
		for i := range data {
			if !step.Write(data[i : i+1]) {
				if utf8.Valid(data[:i+1]) || want {
					t.Fatalf(
						"rejected at %d a valid prefix % x",
						i, data[:i+1])
				}
				// The prefix up to i-1 must be valid or end in an
				// incomplete but so far valid sequence.
				if !validPrefix(data[:i]) {
					t.Fatalf(
						"did not fail fast: % x was already invalid",
						data[:i])
				}
				return
			}
		}
		if step.Complete() != want {
			t.Fatalf(
				"byte by byte: complete=%v, want %v",
				step.Complete(), want)
		}
	})
}

// validPrefix reports whether p is valid UTF-8 or valid UTF-8 followed by
// the start of a code point that some continuation bytes could complete.
func validPrefix(p []byte) bool {
	for k := 0; k <= 3 && k <= len(p); k++ {
		head, tail := p[:len(p)-k], p[len(p)-k:]
		if !utf8.Valid(head) {
			continue
		}
		if len(tail) == 0 {
			return true
		}
		// Try completing tail with continuation bytes 0x80..0xBF.
		if completable(tail) {
			return true
		}
	}
	return false
}

// completable reports whether some continuation bytes turn tail into one
// valid code point. Every range the second byte may need (RFC 3629 §4:
// A0-BF, 80-9F, 90-BF, 80-8F, 80-BF) contains one of these six values, so
// trying them is exact.
func completable(tail []byte) bool {
	conts := []byte{0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf}
	if len(tail) >= 4 {
		return false
	}
	for _, c := range conts {
		cand := append(append([]byte(nil), tail...), c)
		if utf8.FullRune(cand) {
			if utf8.Valid(cand) {
				return true
			}
			continue
		}
		if completable(cand) {
			return true
		}
	}
	return false
}

func FuzzParseClose(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0x03})
	f.Add([]byte("\x03\xe8bye"))
	f.Add([]byte("\x03\xecno"))
	f.Add([]byte("\x0f\xa0\xff"))
	f.Add([]byte("\x03\xe8" + strings.Repeat("€", 41)))
	f.Fuzz(func(t *testing.T, data []byte) {
		code, reason, err := ParseClose(data)
		switch {
		case len(data) == 0:
			if err != nil || code != ws.StatusNoStatusRcvd {
				t.Fatalf(
					"empty: %d %v",
					code, err)
			}
			return
		case len(data) == 1:
			if err != ErrCloseTooShort {
				t.Fatalf(
					"one byte: %v",
					err)
			}
			return
		case len(data) > 125:
			if err != ErrControlTooBig {
				t.Fatalf(
					"%d bytes: %v",
					len(data), err)
			}
			return
		}
		wantCode := ws.StatusCode(binary.BigEndian.Uint16(data))
		switch {
		case !ValidCloseCode(wantCode):
			if err != ErrCloseCode {
				t.Fatalf(
					"code %d: %v",
					wantCode, err)
			}
		case !utf8.Valid(data[2:]):
			if err != ErrCloseReasonUTF8 {
				t.Fatalf(
					"reason %q: %v",
					data[2:], err)
			}
		default:
			if err != nil || code != wantCode || !bytes.Equal(reason, data[2:]) {
				t.Fatalf(
					"ParseClose(% x) = %d %q %v",
					data, code, reason, err)
			}
			// Build it back: the same payload.
			frame := AppendClose(nil, code, string(reason))
			if !bytes.Equal(frame[2:], data) {
				t.Fatalf(
					"AppendClose round trip: % x, want % x",
					frame[2:], data)
			}
		}
	})
}

func FuzzRoundTrip(f *testing.F) {
	f.Add(byte(1), true, []byte("hello"), uint32(0x3d21fa37), uint16(3))
	// Small seeds only: the fuzzer minimizes every new interesting input,
	// which takes minutes for a 64 KiB one. 64-bit lengths are covered by
	// TestParserTable and TestWriteHeaderRoundTrip.
	f.Add(byte(0x81), false, bytes.Repeat([]byte{0}, 300), uint32(1), uint16(65535))
	f.Add(byte(8), true, []byte("\x03\xe8bye"), uint32(0), uint16(1))
	f.Add(byte(9), true, []byte("ping"), uint32(7), uint16(0))
	f.Add(byte(1), true, []byte("\xff"), uint32(7), uint16(0))
	f.Fuzz(func(t *testing.T, opSel byte, fin bool, payload []byte, k uint32, cut uint16) {
		ops := []ws.OpCode{ws.OpText, ws.OpBinary, ws.OpClose, ws.OpPing, ws.OpPong}
		op := ops[int(opSel)%len(ops)]
		if op.IsControl() {
			fin = true
			payload = payload[:min(len(payload), 125)]
		}
		masked := opSel&0x80 != 0
		var (
			stream []byte
			cfg    = &Config{Role: RoleClient}
		)
		if masked {
			var key [4]byte
			binary.LittleEndian.PutUint32(key[:], k)
			stream = AppendMaskedFrame(nil, op, fin, payload, key)
			cfg = &Config{Role: RoleServer}
		} else {
			stream = AppendFrame(nil, op, fin, payload)
			if op != ws.OpBinary && op.IsData() && fin && len(payload) < 126 {
				if !bytes.Equal(CompileFrame(op, payload), stream) {
					t.Fatal("CompileFrame differs from AppendFrame")
				}
			}
		}
		c := int(cut) % (len(stream) + 1)
		res, err := feedPieces(cfg, splitAt(stream, c))
		if err != nil {
			t.Fatal(err)
		}
		if op == ws.OpText && fin && !utf8.Valid(payload) {
			if res.Err != ErrInvalidUTF8 {
				t.Fatalf(
					"invalid text: err=%v",
					res.Err)
			}
			return
		}
		if op == ws.OpText && !fin && !validPrefix(payload) {
			if res.Err != ErrInvalidUTF8 {
				t.Fatalf(
					"invalid text prefix: err=%v",
					res.Err)
			}
			return
		}
		want := frameEv{Op: op, MsgOp: op, Fin: fin, Payload: string(payload), MsgEnd: fin}
		if res.Err != nil || len(res.Frames) != 1 || res.Frames[0] != want || res.InFrame {
			t.Fatalf(
				"round trip: %v %v, want %v",
				res.Frames, res.Err, want)
		}
	})
}
