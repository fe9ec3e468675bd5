package codec

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/gobwas/ws"
)

var (
	serverCfg = &Config{Role: RoleServer}
	clientCfg = &Config{Role: RoleClient}
)

type parserCase struct {
	name   string
	cfg    *Config
	stream []byte
	want   []frameEv
	err    error
	// inFrame: the stream ends inside a frame.
	inFrame bool
}

func ev(op, msgOp ws.OpCode, fin bool, payload string) frameEv {
	return frameEv{
		Op:      op,
		MsgOp:   msgOp,
		Fin:     fin,
		Payload: payload,
		MsgEnd:  fin,
	}
}

func parserCases() []parserCase {
	big := strings.Repeat("x", 70000)
	return []parserCase{
		{
			name:   "rfc 5.7 masked text Hello",
			cfg:    serverCfg,
			stream: []byte{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58},
			want:   []frameEv{ev(ws.OpText, ws.OpText, true, "Hello")},
		},
		{
			name:   "rfc 5.7 unmasked text Hello (client side)",
			cfg:    clientCfg,
			stream: []byte{0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f},
			want:   []frameEv{ev(ws.OpText, ws.OpText, true, "Hello")},
		},
		{
			name:   "rfc 5.7 fragmented unmasked text",
			cfg:    clientCfg,
			stream: []byte{0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f},
			want: []frameEv{
				ev(ws.OpText, ws.OpText, false, "Hel"),
				ev(ws.OpContinuation, ws.OpText, true, "lo"),
			},
		},
		{
			name:   "rfc 5.7 unmasked ping, masked pong",
			cfg:    &Config{Role: RoleClient},
			stream: []byte{0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f},
			want:   []frameEv{ev(ws.OpPing, ws.OpPing, true, "Hello")},
		},
		{
			name:   "rfc 5.7 masked pong",
			cfg:    serverCfg,
			stream: []byte{0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58},
			want:   []frameEv{ev(ws.OpPong, ws.OpPong, true, "Hello")},
		},
		{
			name:   "16-bit length binary",
			cfg:    serverCfg,
			stream: mframe(ws.OpBinary, true, strings.Repeat("\xff", 256)),
			want:   []frameEv{ev(ws.OpBinary, ws.OpBinary, true, strings.Repeat("\xff", 256))},
		},
		{
			name:   "64-bit length text",
			cfg:    serverCfg,
			stream: mframe(ws.OpText, true, big),
			want:   []frameEv{ev(ws.OpText, ws.OpText, true, big)},
		},
		{
			name:   "non-minimal 16-bit length accepted",
			cfg:    clientCfg,
			stream: []byte{0x82, 126, 0, 3, 'a', 'b', 'c'},
			want:   []frameEv{ev(ws.OpBinary, ws.OpBinary, true, "abc")},
		},
		{
			name:   "non-minimal 64-bit length accepted",
			cfg:    clientCfg,
			stream: []byte{0x82, 127, 0, 0, 0, 0, 0, 0, 0, 2, 'a', 'b'},
			want:   []frameEv{ev(ws.OpBinary, ws.OpBinary, true, "ab")},
		},
		{
			name: "empty frames",
			cfg:  serverCfg,
			stream: cat(
				mframe(ws.OpText, true, ""),
				mframe(ws.OpBinary, false, ""),
				mframe(ws.OpContinuation, true, ""),
				mframe(ws.OpPing, true, ""),
			),
			want: []frameEv{
				ev(ws.OpText, ws.OpText, true, ""),
				ev(ws.OpBinary, ws.OpBinary, false, ""),
				ev(ws.OpContinuation, ws.OpBinary, true, ""),
				ev(ws.OpPing, ws.OpPing, true, ""),
			},
		},
		{
			name: "control frames interleaved between fragments",
			cfg:  serverCfg,
			stream: cat(
				mframe(ws.OpText, false, "ab"),
				mframe(ws.OpPing, true, "p1"),
				mframe(ws.OpContinuation, false, "cd"),
				mframe(ws.OpPong, true, ""),
				mframe(ws.OpClose, true, "\x03\xe8"),
				mframe(ws.OpContinuation, true, "ef"),
			),
			want: []frameEv{
				ev(ws.OpText, ws.OpText, false, "ab"),
				ev(ws.OpPing, ws.OpPing, true, "p1"),
				ev(ws.OpContinuation, ws.OpText, false, "cd"),
				ev(ws.OpPong, ws.OpPong, true, ""),
				ev(ws.OpClose, ws.OpClose, true, "\x03\xe8"),
				ev(ws.OpContinuation, ws.OpText, true, "ef"),
			},
		},
		{
			name: "code point split across fragments",
			cfg:  serverCfg,
			stream: cat(
				mframe(ws.OpText, false, "\xf0\x9f"),
				mframe(ws.OpContinuation, false, "\x98"),
				mframe(ws.OpContinuation, true, "\x80!"),
			),
			want: []frameEv{
				ev(ws.OpText, ws.OpText, false, "\xf0\x9f"),
				ev(ws.OpContinuation, ws.OpText, false, "\x98"),
				ev(ws.OpContinuation, ws.OpText, true, "\x80!"),
			},
		},
		{
			name:   "U+FFFF and U+FFFE are valid",
			cfg:    serverCfg,
			stream: mframe(ws.OpText, true, "\xef\xbf\xbf\xef\xbf\xbe"),
			want:   []frameEv{ev(ws.OpText, ws.OpText, true, "\xef\xbf\xbf\xef\xbf\xbe")},
		},
		{
			name:   "binary is not UTF-8 checked",
			cfg:    serverCfg,
			stream: mframe(ws.OpBinary, true, "\xff\xfe"),
			want:   []frameEv{ev(ws.OpBinary, ws.OpBinary, true, "\xff\xfe")},
		},
		{
			name:   "invalid UTF-8 in text",
			cfg:    serverCfg,
			stream: mframe(ws.OpText, true, "ok\xc0\xaf"),
			err:    ErrInvalidUTF8,
		},
		{
			name:   "surrogate in text",
			cfg:    serverCfg,
			stream: mframe(ws.OpText, true, "\xed\xa0\x80"),
			err:    ErrInvalidUTF8,
		},
		{
			name: "invalid UTF-8 fails before the message ends",
			cfg:  serverCfg,
			stream: cat(
				mframe(ws.OpText, false, "ok\xf4\x90"),
			),
			err: ErrInvalidUTF8,
		},
		{
			name: "text message ending inside a code point",
			cfg:  serverCfg,
			stream: cat(
				mframe(ws.OpText, false, "a"),
				mframe(ws.OpContinuation, true, "\xe2\x82"),
			),
			want: []frameEv{ev(ws.OpText, ws.OpText, false, "a")},
			err:  ErrInvalidUTF8,
		},
		{
			name:   "close reason UTF-8 is left to ParseClose",
			cfg:    serverCfg,
			stream: mframe(ws.OpClose, true, "\x03\xe8\xff"),
			want:   []frameEv{ev(ws.OpClose, ws.OpClose, true, "\x03\xe8\xff")},
		},
		{
			name:    "truncated header",
			cfg:     serverCfg,
			stream:  mframe(ws.OpText, true, strings.Repeat("a", 300))[:5],
			inFrame: true,
		},
		{
			name:    "truncated payload",
			cfg:     serverCfg,
			stream:  mframe(ws.OpText, true, "hello")[:8],
			inFrame: true,
		},
		{
			name:   "unmasked client frame",
			cfg:    serverCfg,
			stream: rawFrame(0x81, false, "hi"),
			err:    ErrMaskRequired,
		},
		{
			name:   "masked server frame",
			cfg:    clientCfg,
			stream: rawFrame(0x81, true, "hi"),
			err:    ErrMaskForbidden,
		},
		{
			name:   "64-bit length with MSB",
			cfg:    serverCfg,
			stream: []byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4},
			err:    ErrLengthMSB,
		},
		{
			name:   "reserved opcode 3",
			cfg:    serverCfg,
			stream: rawFrame(0x83, true, ""),
			err:    ErrReservedOpcode,
		},
		{
			name:   "reserved opcode 7",
			cfg:    serverCfg,
			stream: rawFrame(0x87, true, ""),
			err:    ErrReservedOpcode,
		},
		{
			name:   "reserved opcode 11",
			cfg:    serverCfg,
			stream: rawFrame(0x8b, true, ""),
			err:    ErrReservedOpcode,
		},
		{
			name:   "reserved opcode 15",
			cfg:    serverCfg,
			stream: rawFrame(0x8f, true, ""),
			err:    ErrReservedOpcode,
		},
		{
			name:   "RSV1 without extension",
			cfg:    serverCfg,
			stream: rawFrame(0xc1, true, "x"),
			err:    ErrRSV,
		},
		{
			name:   "RSV2",
			cfg:    &Config{AllowRSV1: true},
			stream: rawFrame(0xa1, true, "x"),
			err:    ErrRSV,
		},
		{
			name:   "RSV3",
			cfg:    &Config{AllowRSV1: true},
			stream: rawFrame(0x91, true, "x"),
			err:    ErrRSV,
		},
		{
			name: "RSV1 allowed on first data frame, payload not UTF-8 checked",
			cfg:  &Config{AllowRSV1: true},
			stream: cat(
				rawFrame(0x41, true, "\xff"),
				rawFrame(0x80, true, "\xfe"),
				rawFrame(0xc2, true, "b"),
				rawFrame(0x81, true, "plain"),
			),
			want: []frameEv{
				{Op: ws.OpText, MsgOp: ws.OpText, Rsv: rsv1, Payload: "\xff", Compressed: true},
				{Op: ws.OpContinuation, MsgOp: ws.OpText, Fin: true, Payload: "\xfe", MsgEnd: true, Compressed: true},
				{Op: ws.OpBinary, MsgOp: ws.OpBinary, Fin: true, Rsv: rsv1, Payload: "b", MsgEnd: true, Compressed: true},
				ev(ws.OpText, ws.OpText, true, "plain"),
			},
		},
		{
			name: "RSV1 on continuation",
			cfg:  &Config{AllowRSV1: true},
			stream: cat(
				rawFrame(0x41, true, "a"),
				rawFrame(0xc0, true, "b"),
			),
			want: []frameEv{{Op: ws.OpText, MsgOp: ws.OpText, Rsv: rsv1, Payload: "a", Compressed: true}},
			err:  ErrRSV,
		},
		{
			name:   "RSV1 on control frame",
			cfg:    &Config{AllowRSV1: true},
			stream: rawFrame(0xc9, true, ""),
			err:    ErrRSV,
		},
		{
			name:   "ping of 126 bytes",
			cfg:    serverCfg,
			stream: mframe(ws.OpPing, true, strings.Repeat("p", 126)),
			err:    ErrControlTooBig,
		},
		{
			name:   "ping of 125 bytes",
			cfg:    serverCfg,
			stream: mframe(ws.OpPing, true, strings.Repeat("p", 125)),
			want:   []frameEv{ev(ws.OpPing, ws.OpPing, true, strings.Repeat("p", 125))},
		},
		{
			name:   "fragmented ping",
			cfg:    serverCfg,
			stream: mframe(ws.OpPing, false, "p"),
			err:    ErrControlFragmented,
		},
		{
			name:   "continuation without start",
			cfg:    serverCfg,
			stream: mframe(ws.OpContinuation, true, "x"),
			err:    ErrContinuationWithoutStart,
		},
		{
			name: "continuation after a finished message",
			cfg:  serverCfg,
			stream: cat(
				mframe(ws.OpText, true, "a"),
				mframe(ws.OpContinuation, true, "b"),
			),
			want: []frameEv{ev(ws.OpText, ws.OpText, true, "a")},
			err:  ErrContinuationWithoutStart,
		},
		{
			name: "new text frame inside a fragmented message",
			cfg:  serverCfg,
			stream: cat(
				mframe(ws.OpBinary, false, "a"),
				mframe(ws.OpText, true, "b"),
			),
			want: []frameEv{ev(ws.OpBinary, ws.OpBinary, false, "a")},
			err:  ErrDataInsideFragmented,
		},
		{
			name:   "frame above MaxFrameSize",
			cfg:    &Config{MaxFrameSize: 4},
			stream: mframe(ws.OpBinary, true, "12345"),
			err:    ErrFrameTooBig,
		},
		{
			name:   "frame at MaxFrameSize",
			cfg:    &Config{MaxFrameSize: 5},
			stream: mframe(ws.OpBinary, true, "12345"),
			want:   []frameEv{ev(ws.OpBinary, ws.OpBinary, true, "12345")},
		},
		{
			name: "message above MaxMessageSize",
			cfg:  &Config{MaxMessageSize: 5},
			stream: cat(
				mframe(ws.OpBinary, false, "123"),
				mframe(ws.OpPing, true, "ping is not counted"),
				mframe(ws.OpContinuation, false, "45"),
				mframe(ws.OpContinuation, true, "6"),
			),
			want: []frameEv{
				ev(ws.OpBinary, ws.OpBinary, false, "123"),
				ev(ws.OpPing, ws.OpPing, true, "ping is not counted"),
				ev(ws.OpContinuation, ws.OpBinary, false, "45"),
			},
			err: ErrMessageTooBig,
		},
		{
			name: "MaxMessageSize counts per message",
			cfg:  &Config{MaxMessageSize: 3},
			stream: cat(
				mframe(ws.OpBinary, true, "123"),
				mframe(ws.OpText, false, "1"),
				mframe(ws.OpContinuation, true, "23"),
			),
			want: []frameEv{
				ev(ws.OpBinary, ws.OpBinary, true, "123"),
				ev(ws.OpText, ws.OpText, false, "1"),
				ev(ws.OpContinuation, ws.OpText, true, "23"),
			},
		},
		{
			name:   "huge declared length is rejected before any payload",
			cfg:    &Config{MaxFrameSize: 1 << 20},
			stream: []byte{0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 'x'},
			err:    ErrFrameTooBig,
		},
	}
}

func TestParserTable(t *testing.T) {
	for _, tc := range parserCases() {
		t.Run(tc.name, func(t *testing.T) {
			check := func(t *testing.T, how string, got parseResult) {
				t.Helper()
				if got.Err != tc.err {
					t.Fatalf(
						"%s: err = %v, want %v",
						how, got.Err, tc.err)
				}
				if len(got.Frames) != len(tc.want) {
					t.Fatalf(
						"%s: frames = %v, want %v",
						how, got.Frames, tc.want)
				}
				for i := range tc.want {
					if got.Frames[i] != tc.want[i] {
						t.Fatalf(
							"%s: frame %d = %v, want %v",
							how, i, got.Frames[i], tc.want[i])
					}
				}
				if tc.err == nil && got.InFrame != tc.inFrame {
					t.Fatalf(
						"%s: InFrame = %v, want %v",
						how, got.InFrame, tc.inFrame)
				}
			}
			check(t, "one shot", mustFeed(t, tc.cfg, [][]byte{bytes.Clone(tc.stream)}))
			check(t, "byte by byte", mustFeed(t, tc.cfg, byteByByte(tc.stream)))
			// Every single split point when the stream is small, a sample
			// otherwise.
			step := 1
			if len(tc.stream) > 512 {
				step = 97
			}
			for cut := 0; cut <= len(tc.stream); cut += step {
				check(t, "split", mustFeed(t, tc.cfg, splitAt(tc.stream, cut)))
			}
		})
	}
}

func TestParserResetAndReuse(t *testing.T) {
	var p Parser
	p.Init(serverCfg)
	// Leave a partial header and an open fragmented message behind.
	stream := cat(mframe(ws.OpText, false, "a"), mframe(ws.OpText, true, "b")[:3])
	b := bytes.Clone(stream)
	for len(b) > 0 {
		_, n, ok, err := p.Next(b)
		if err != nil {
			t.Fatal(err)
		}
		b = b[n:]
		if !ok {
			break
		}
	}
	if !p.InFrame() || !p.InMessage() {
		t.Fatalf(
			"InFrame=%v InMessage=%v, want both true",
			p.InFrame(), p.InMessage())
	}
	p.Reset()
	if p.InFrame() || p.InMessage() {
		t.Fatal("Reset kept state")
	}
	if p.cfg != serverCfg {
		t.Fatal("Reset dropped the config")
	}
	fr := mframe(ws.OpText, true, "ok")
	c, n, ok, err := p.Next(fr)
	if err != nil || !ok || n != len(fr) || string(c.Payload) != "ok" || !c.MsgEnd {
		t.Fatalf(
			"after Reset: c=%+v n=%d ok=%v err=%v",
			c, n, ok, err)
	}
}

func TestParserZeroValueIsServer(t *testing.T) {
	var p Parser
	_, _, _, err := p.Next(rawFrame(0x82, false, "x"))
	if err != ErrMaskRequired {
		t.Fatalf(
			"zero Parser on unmasked frame: err = %v, want %v",
			err, ErrMaskRequired)
	}
}

func TestParserSize(t *testing.T) {
	size := unsafe.Sizeof(Parser{})
	t.Logf("unsafe.Sizeof(Parser{}) = %d", size)
	if unsafe.Sizeof(uintptr(0)) == 8 && size > 64 {
		t.Fatalf(
			"Parser is %d bytes, budget is 64",
			size)
	}
}

func TestParserAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not exact under -race")
	}
	pristine := cat(
		mframe(ws.OpText, false, "hello, "),
		mframe(ws.OpPing, true, "p"),
		mframe(ws.OpContinuation, true, "world \xe2\x82\xac"),
		mframe(ws.OpBinary, true, strings.Repeat("b", 300)),
	)
	buf := make([]byte, len(pristine))
	var p Parser
	p.Init(&Config{MaxMessageSize: 1 << 20})
	chunks := 0
	allocs := testing.AllocsPerRun(100, func() {
		copy(buf, pristine)
		p.Reset()
		b := buf
		for len(b) > 0 {
			_, n, ok, err := p.Next(b)
			if err != nil {
				panic(err)
			}
			b = b[n:]
			if ok {
				chunks++
			}
		}
		// A header split across calls goes through the partial-header path.
		b = buf[:3]
		copy(buf, pristine)
		p.Next(b)
		p.Next(buf[3:5])
	})
	if chunks == 0 {
		t.Fatal("no chunks parsed")
	}
	if allocs != 0 {
		t.Fatalf(
			"Parser.Next: %v allocs per run, want 0",
			allocs)
	}
}

// A parser that reports Idle continues exactly like a fresh one: feeding
// the rest of a stream to a new parser after any idle point gives the
// same chunks.
func TestIdleParserIsFresh(t *testing.T) {
	cfg := &Config{}
	var stream []byte
	stream = append(stream, clientFrameIdle(ws.OpText, true, []byte("héllo"))...)
	stream = append(stream, clientFrameIdle(ws.OpBinary, false, []byte("ab"))...)
	stream = append(stream, clientFrameIdle(ws.OpPing, true, []byte("p"))...)
	stream = append(stream, clientFrameIdle(ws.OpContinuation, true, []byte("cd"))...)
	stream = append(stream, clientFrameIdle(ws.OpText, true, []byte("end"))...)
	collect := func(p *Parser, b []byte) (out []string, idleAt []int) {
		off := 0
		for off < len(b) {
			// one byte at a time: every split point is exercised
			ch, n, ok, err := p.Next(b[off : off+1])
			if err != nil {
				t.Fatal(err)
			}
			off += n
			if ok {
				out = append(out, fmt.Sprintf("%v %q first=%v msgEnd=%v", ch.MsgOp, ch.Payload, ch.First, ch.MsgEnd))
			}
			if p.Idle() {
				idleAt = append(idleAt, off)
			}
		}
		return out, idleAt
	}
	var p Parser
	p.Init(cfg)
	want, idleAt := collect(&p, bytes.Clone(stream))
	if len(idleAt) == 0 || idleAt[len(idleAt)-1] != len(stream) {
		t.Fatalf("parser not idle at the end: %v", idleAt)
	}
	for _, at := range idleAt {
		var a, b Parser
		a.Init(cfg)
		b.Init(cfg)
		s := bytes.Clone(stream)
		head, _ := collect(&a, s[:at])
		tail, _ := collect(&b, s[at:])
		if got := append(head, tail...); !slices.Equal(got, want) {
			t.Errorf("fresh parser at idle offset %d: got %q, want %q", at, got, want)
		}
	}
	// Mid-message (between fragments) is not idle.
	var q Parser
	q.Init(cfg)
	frag := clientFrameIdle(ws.OpBinary, false, []byte("ab"))
	if _, _, ok, err := q.Next(bytes.Clone(frag)); !ok || err != nil || q.Idle() {
		t.Fatalf("after a non-final fragment: ok=%v err=%v idle=%v", ok, err, q.Idle())
	}
}

// clientFrameIdle builds a masked client frame (payload < 126 bytes).
func clientFrameIdle(op ws.OpCode, fin bool, payload []byte) []byte {
	b0 := byte(op)
	if fin {
		b0 |= 0x80
	}
	key := [4]byte{0x11, 0x22, 0x33, 0x44}
	out := []byte{b0, 0x80 | byte(len(payload)), key[0], key[1], key[2], key[3]}
	for i, c := range payload {
		out = append(out, c^key[i%4])
	}
	return out
}
