package codec

import (
	"bytes"
	"testing"
	"unsafe"

	"github.com/gobwas/ws"
)

func TestParseHeader(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		want ws.Header
		n    int
		err  error
	}{
		{
			name: "empty",
			in:   nil,
			err:  ErrShortHeader,
		},
		{
			name: "one byte",
			in:   []byte{0x81},
			err:  ErrShortHeader,
		},
		{
			name: "unmasked 7-bit",
			in:   []byte{0x81, 0x05, 'H'},
			want: ws.Header{Fin: true, OpCode: ws.OpText, Length: 5},
			n:    2,
		},
		{
			name: "masked 7-bit",
			in:   []byte{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d},
			want: ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: [4]byte{0x37, 0xfa, 0x21, 0x3d}, Length: 5},
			n:    6,
		},
		{
			name: "masked, mask incomplete",
			in:   []byte{0x81, 0x85, 0x37, 0xfa, 0x21},
			err:  ErrShortHeader,
		},
		{
			name: "16-bit",
			in:   []byte{0x82, 0x7e, 0x01, 0x00},
			want: ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 256},
			n:    4,
		},
		{
			name: "16-bit incomplete",
			in:   []byte{0x82, 0x7e, 0x01},
			err:  ErrShortHeader,
		},
		{
			name: "64-bit",
			in:   []byte{0x02, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0},
			want: ws.Header{OpCode: ws.OpBinary, Length: 65536},
			n:    10,
		},
		{
			name: "64-bit max",
			in:   []byte{0x02, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 9, 8, 7, 6},
			want: ws.Header{OpCode: ws.OpBinary, Masked: true, Mask: [4]byte{9, 8, 7, 6}, Length: 1<<63 - 1},
			n:    14,
		},
		{
			name: "64-bit MSB",
			in:   []byte{0x02, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0},
			err:  ErrLengthMSB,
		},
		{
			name: "64-bit MSB with mask still short",
			in:   []byte{0x02, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0},
			err:  ErrShortHeader,
		},
		{
			name: "rsv and reserved opcode are parsed, not judged",
			in:   []byte{0x7f, 0x00},
			want: ws.Header{Rsv: 7, OpCode: 0xf},
			n:    2,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, n, err := ParseHeader(tc.in)
			if err != tc.err || h != tc.want || n != tc.n {
				t.Fatalf(
					"ParseHeader(% x) = %+v, %d, %v; want %+v, %d, %v",
					tc.in, h, n, err, tc.want, tc.n, tc.err)
			}
			if err == nil && NeedHeaderBytes(tc.in) != n {
				t.Fatalf(
					"NeedHeaderBytes = %d, want %d",
					NeedHeaderBytes(tc.in), n)
			}
			// Every proper prefix is short.
			for i := 0; i < NeedHeaderBytes(tc.in) && i < len(tc.in); i++ {
				if _, _, err := ParseHeader(tc.in[:i]); err != ErrShortHeader {
					t.Fatalf(
						"prefix %d: err = %v, want ErrShortHeader",
						i, err)
				}
			}
		})
	}
}

func TestWriteHeaderRoundTrip(t *testing.T) {
	lengths := []int64{0, 1, 125, 126, 127, 0xffff, 0x10000, 1<<32 + 5, 1<<63 - 1}
	for _, l := range lengths {
		for _, masked := range []bool{false, true} {
			for _, fin := range []bool{false, true} {
				h := ws.Header{Fin: fin, Rsv: rsv1, OpCode: ws.OpBinary, Masked: masked, Length: l}
				if masked {
					h.Mask = [4]byte{0xde, 0xad, 0xbe, 0xef}
				}
				buf := make([]byte, ws.MaxHeaderSize)
				n := WriteHeader(buf, h)
				if n != HeaderSize(h) || n == 0 {
					t.Fatalf(
						"WriteHeader(%+v) = %d, HeaderSize = %d",
						h, n, HeaderSize(h))
				}
				got, m, err := ParseHeader(buf[:n])
				if err != nil || m != n || got != h {
					t.Fatalf(
						"round trip %+v: got %+v, %d, %v",
						h, got, m, err)
				}
				// Same bytes as gobwas/ws.
				var ref bytes.Buffer
				if err := ws.WriteHeader(&ref, h); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(ref.Bytes(), buf[:n]) {
					t.Fatalf(
						"WriteHeader(%+v) = % x, gobwas = % x",
						h, buf[:n], ref.Bytes())
				}
			}
		}
	}
}

func TestWriteHeaderShortBuffer(t *testing.T) {
	h := ws.Header{Fin: true, OpCode: ws.OpText, Length: 300}
	if n := WriteHeader(make([]byte, 3), h); n != 0 {
		t.Fatalf(
			"WriteHeader into 3 bytes = %d, want 0",
			n)
	}
	if n := WriteHeader(make([]byte, 14), ws.Header{Length: -1}); n != 0 {
		t.Fatalf(
			"WriteHeader with negative length = %d, want 0",
			n)
	}
}

func TestHeaderAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not exact under -race")
	}
	in := []byte{0x82, 0xfe, 0x01, 0x00, 1, 2, 3, 4}
	buf := make([]byte, ws.MaxHeaderSize)
	var sink int
	allocs := testing.AllocsPerRun(100, func() {
		h, n, _ := ParseHeader(in)
		sink += n + WriteHeader(buf, h)
	})
	if allocs != 0 || sink == 0 {
		t.Fatalf(
			"ParseHeader+WriteHeader: %v allocs per run, want 0",
			allocs)
	}
	appendAllocs := testing.AllocsPerRun(100, func() {
		buf2 := AppendFrame(buf[:0:cap(buf)], ws.OpText, true, []byte("hi"))
		sink += len(buf2)
	})
	if appendAllocs != 0 {
		t.Fatalf(
			"AppendFrame into a big enough buffer: %v allocs per run, want 0",
			appendAllocs)
	}
}

// TestHeaderLayout pins the ws.Header layout that header_unsafe.go writes
// with one 64-bit store.
func TestHeaderLayout(t *testing.T) {
	var h ws.Header
	got := []uintptr{
		unsafe.Offsetof(h.Fin),
		unsafe.Offsetof(h.Rsv),
		unsafe.Offsetof(h.OpCode),
		unsafe.Offsetof(h.Masked),
		unsafe.Offsetof(h.Mask),
		unsafe.Offsetof(h.Length),
		unsafe.Sizeof(h.Fin) + unsafe.Sizeof(h.Rsv) + unsafe.Sizeof(h.OpCode) + unsafe.Sizeof(h.Masked),
	}
	want := []uintptr{0, 1, 2, 3, 4, 8, 4}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf(
				"ws.Header layout changed: offsets/sizes %v, want %v",
				got, want)
		}
	}
	// Fin and Masked must read as true from a stored 1.
	in := []byte{0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1, 9, 8, 7, 6}
	var got2 ws.Header
	if _, err := parseHeader(&got2, in); err != nil {
		t.Fatal(err)
	}
	want2 := ws.Header{Fin: true, Rsv: 7, OpCode: 0xf, Masked: true, Mask: [4]byte{9, 8, 7, 6}, Length: 1}
	if got2 != want2 {
		t.Fatalf(
			"parseHeader = %+v, want %+v",
			got2, want2)
	}
}
