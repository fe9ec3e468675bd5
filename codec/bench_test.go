package codec

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

var benchSizes = []int{16, 125, 512, 4096, 65536}

// BenchmarkUnmask, BenchmarkCopy and BenchmarkGobwasCipher run over the same
// sizes so that one run gives the ratios: Copy is the memory-bandwidth
// reference, GobwasCipher the library codec builds on.
func BenchmarkUnmask(b *testing.B) {
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("size=%d", n), func(b *testing.B) {
			buf := make([]byte, n)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				Unmask(buf, key, 1)
			}
		})
	}
}

func BenchmarkCopy(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("size=%d", n), func(b *testing.B) {
			src := make([]byte, n)
			dst := make([]byte, n)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				copy(dst, src)
			}
		})
	}
}

func BenchmarkGobwasCipher(b *testing.B) {
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("size=%d", n), func(b *testing.B) {
			buf := make([]byte, n)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				ws.Cipher(buf, key, 1)
			}
		})
	}
}

// parseStream is 1,000 masked 64-byte client text frames with the given
// 8-byte pattern repeated as payload.
func parseStream(pattern string) []byte {
	payload := bytes.Repeat([]byte(pattern), 8)
	if len(payload) != 64 || !utf8.Valid(payload) {
		panic("pattern must be 8 bytes of valid UTF-8")
	}
	var s []byte
	for i := range 1000 {
		s = AppendMaskedFrame(s, ws.OpText, true, payload, [4]byte{byte(i), 0xfa, 0x21, byte(i >> 8)})
	}
	return s
}

// BenchmarkParseStream: parse + unmask + UTF-8 check of 1,000 frames, by
// codec (in place over the received bytes) and by gobwas/ws over a
// bytes.Reader (ReadHeader, CheckHeader, ReadFull into a reused buffer,
// Cipher, utf8.Valid). Both include one copy of the stream: codec's "socket
// read" into its buffer, gobwas's ReadFull. impl=gobwas-buffer uses
// ReadHeaderBuffer, which does not allocate. text=ascii is JSON-like ASCII
// (pushd.v1 commands); text=utf8 has a 2-byte code point every 8 bytes ("push-é-").
func BenchmarkParseStream(b *testing.B) {
	for _, text := range []struct{ name, pattern string }{
		{"ascii", `{"op":1}`},
		{"utf8", "push-é-"},
	} {
		stream := parseStream(text.pattern)
		b.Run("text="+text.name+"/impl=codec", func(b *testing.B) {
			benchParseCodec(b, stream)
		})
		b.Run("text="+text.name+"/impl=gobwas", func(b *testing.B) {
			benchParseGobwas(b, stream, ws.ReadHeader)
		})
		b.Run("text="+text.name+"/impl=gobwas-buffer", func(b *testing.B) {
			hb := make([]byte, ws.MaxHeaderSize)
			benchParseGobwas(b, stream, func(r io.Reader) (ws.Header, error) { return ws.ReadHeaderBuffer(r, hb) })
		})
	}
}

func benchParseCodec(b *testing.B, stream []byte) {
	buf := make([]byte, len(stream))
	var p Parser
	p.Init(&Config{MaxFrameSize: 1 << 20, MaxMessageSize: 1 << 20})
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		copy(buf, stream)
		frames := 0
		for rest := buf; len(rest) > 0; {
			c, n, ok, err := p.Next(rest)
			if err != nil || !ok {
				b.Fatalf(
					"Next: ok=%v err=%v",
					ok, err)
			}
			if c.MsgEnd {
				frames++
			}
			rest = rest[n:]
		}
		if frames != 1000 {
			b.Fatalf(
				"%d frames",
				frames)
		}
	}
}

func benchParseGobwas(b *testing.B, stream []byte, readHeader func(io.Reader) (ws.Header, error)) {
	var r bytes.Reader
	payload := make([]byte, 125)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(stream)
		frames := 0
		for r.Len() > 0 {
			h, err := readHeader(&r)
			if err != nil {
				b.Fatal(err)
			}
			if err := ws.CheckHeader(h, ws.StateServerSide); err != nil {
				b.Fatal(err)
			}
			p := payload[:h.Length]
			if _, err := io.ReadFull(&r, p); err != nil {
				b.Fatal(err)
			}
			ws.Cipher(p, h.Mask, 0)
			if !utf8.Valid(p) {
				b.Fatal("invalid UTF-8")
			}
			frames++
		}
		if frames != 1000 {
			b.Fatalf(
				"%d frames",
				frames)
		}
	}
}

func BenchmarkParseHeader(b *testing.B) {
	in := []byte{0x82, 0xfe, 0x01, 0x00, 1, 2, 3, 4}
	b.ReportAllocs()
	for b.Loop() {
		ParseHeader(in)
	}
}

func BenchmarkUTF8(b *testing.B) {
	for _, kind := range []struct {
		name string
		in   []byte
	}{
		{"ascii", bytes.Repeat([]byte("a"), 4096)},
		{"mixed", bytes.Repeat([]byte("héllo wörld € 😀 "), 4096/22)},
	} {
		b.Run("kind="+kind.name+"/impl=codec", func(b *testing.B) {
			b.SetBytes(int64(len(kind.in)))
			b.ReportAllocs()
			var u UTF8
			for b.Loop() {
				u.Reset()
				u.Write(kind.in[:1001])
				u.Write(kind.in[1001:])
			}
		})
		b.Run("kind="+kind.name+"/impl=stdlib", func(b *testing.B) {
			b.SetBytes(int64(len(kind.in)))
			b.ReportAllocs()
			for b.Loop() {
				utf8.Valid(kind.in)
			}
		})
	}
}
