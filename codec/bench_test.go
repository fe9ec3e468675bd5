package codec

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"unicode/utf8"
	"unsafe"

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

func BenchmarkWriteHeader(b *testing.B) {
	h := ws.Header{Fin: true, OpCode: ws.OpText, Length: 300}
	buf := make([]byte, ws.MaxHeaderSize)
	b.ReportAllocs()
	for b.Loop() {
		WriteHeader(buf, h)
	}
}

func BenchmarkAppendFrame(b *testing.B) {
	payload := bytes.Repeat([]byte("x"), 512)
	dst := make([]byte, 0, 1024)
	b.SetBytes(int64(len(payload)))
	b.Run("impl=codec", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			dst = AppendFrame(dst[:0], ws.OpText, true, payload)
		}
	})
	b.Run("impl=gobwas", func(b *testing.B) {
		var w bytes.Buffer
		w.Grow(1024)
		b.ReportAllocs()
		for b.Loop() {
			w.Reset()
			ws.WriteFrame(&w, ws.NewTextFrame(payload))
		}
	})
}

func BenchmarkParseClose(b *testing.B) {
	in := []byte("\x03\xe9server going away for maintenance")
	b.Run("impl=codec", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ParseClose(in)
		}
	})
	b.Run("impl=gobwas", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			code, reason := ws.ParseCloseFrameDataUnsafe(in)
			ws.CheckCloseFrameData(code, reason)
		}
	})
}

// unmaskWordsUnsafe is unmaskGeneric with unaligned loads through unsafe
// pointers instead of encoding/binary, kept here only to measure the choice
// made in mask.go (BenchmarkUnmaskGeneric).
func unmaskWordsUnsafe(b []byte, k32 uint32) ([]byte, uint64) {
	k := uint64(k32)<<32 | uint64(k32)
	var acc uint64
	for len(b) >= 32 {
		p := unsafe.Pointer(unsafe.SliceData(b))
		w0 := *(*uint64)(p) ^ k
		w1 := *(*uint64)(unsafe.Add(p, 8)) ^ k
		w2 := *(*uint64)(unsafe.Add(p, 16)) ^ k
		w3 := *(*uint64)(unsafe.Add(p, 24)) ^ k
		*(*uint64)(p) = w0
		*(*uint64)(unsafe.Add(p, 8)) = w1
		*(*uint64)(unsafe.Add(p, 16)) = w2
		*(*uint64)(unsafe.Add(p, 24)) = w3
		acc |= (w0 | w1) | (w2 | w3)
		b = b[32:]
	}
	for len(b) >= 8 {
		p := unsafe.Pointer(unsafe.SliceData(b))
		w := *(*uint64)(p) ^ k
		*(*uint64)(p) = w
		acc |= w
		b = b[8:]
	}
	return b, acc
}

// BenchmarkUnmaskGeneric compares the portable word loop written with
// encoding/binary (used) and with unsafe loads (not used).
func BenchmarkUnmaskGeneric(b *testing.B) {
	for _, n := range []int{16, 125, 512, 4096} {
		buf := make([]byte, n)
		b.Run(fmt.Sprintf("load=binary/size=%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				unmaskGeneric(buf, 0x01020304)
			}
		})
		b.Run(fmt.Sprintf("load=unsafe/size=%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				unmaskWordsUnsafe(buf, 0x01020304)
			}
		})
	}
}
