package codec

import (
	"bytes"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

func TestAppendFrameMatchesGobwas(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 65535, 65536} {
		payload := []byte(strings.Repeat("z", n))
		for _, fin := range []bool{false, true} {
			got := AppendFrame(nil, ws.OpBinary, fin, payload)
			var ref bytes.Buffer
			if err := ws.WriteFrame(&ref, ws.NewFrame(ws.OpBinary, fin, payload)); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, ref.Bytes()) {
				t.Fatalf(
					"AppendFrame len=%d fin=%v differs from gobwas",
					n, fin)
			}
		}
		c := CompileFrame(ws.OpText, payload)
		if len(c) != cap(c) || !bytes.Equal(c, AppendFrame(nil, ws.OpText, true, payload)) {
			t.Fatalf(
				"CompileFrame len=%d: len %d cap %d",
				n, len(c), cap(c))
		}
	}
}

func TestAppendMaskedFrame(t *testing.T) {
	payload := []byte("Hello")
	got := AppendMaskedFrame(nil, ws.OpText, true, payload, [4]byte{0x37, 0xfa, 0x21, 0x3d})
	// RFC 6455 §5.7.
	want := []byte{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58}
	if !bytes.Equal(got, want) || string(payload) != "Hello" {
		t.Fatalf(
			"AppendMaskedFrame = % x, want % x (payload %q)",
			got, want, payload)
	}
}

func TestCompileCompressedFrame(t *testing.T) {
	f := CompileCompressedFrame(ws.OpText, []byte{0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00})
	// RFC 7692 §7.2.3.1: "Hello" compressed, RSV1 set.
	want := []byte{0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}
	if !bytes.Equal(f, want) {
		t.Fatalf(
			"CompileCompressedFrame = % x, want % x",
			f, want)
	}
}
