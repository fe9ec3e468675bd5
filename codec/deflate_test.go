package codec

import (
	"bytes"
	stdflate "compress/flate"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
)

// inflateStd is an independent reference: compress/flate over the payload
// plus the RFC 7692 §7.2.2 tail.
func inflateStd(t *testing.T, compressed []byte) []byte {
	t.Helper()
	r := stdflate.NewReader(io.MultiReader(bytes.NewReader(compressed), strings.NewReader("\x00\x00\xff\xff")))
	out, err := io.ReadAll(r)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf(
			"reference inflate: %v",
			err)
	}
	return out
}

func TestCompressRoundTrip(t *testing.T) {
	payloads := [][]byte{
		nil,
		[]byte("Hello"),
		benchJSON(512),
		benchJSON(70000),
		bytes.Repeat([]byte{0}, 1<<20),
	}
	var c Compressor
	var d Decompressor
	for i, p := range payloads {
		z, err := c.Compress([]byte("prefix"), p)
		if err != nil {
			t.Fatal(err)
		}
		if string(z[:6]) != "prefix" {
			t.Fatal("dst prefix lost")
		}
		z = z[6:]
		if bytes.HasSuffix(z, []byte{0, 0, 0xff, 0xff}) {
			t.Fatalf(
				"payload %d: tail not stripped",
				i)
		}
		if got := inflateStd(t, z); !bytes.Equal(got, p) {
			t.Fatalf(
				"payload %d: compress/flate inflates %d bytes, want %d",
				i, len(got), len(p))
		}
		got, err := d.Decompress([]byte("x"), z, int64(len(p)))
		if err != nil || !bytes.Equal(got[1:], p) || got[0] != 'x' {
			t.Fatalf(
				"payload %d: Decompress = %d bytes, %v",
				i, len(got), err)
		}
		if len(p) > 0 {
			if _, err := d.Decompress(nil, z, int64(len(p)-1)); err != ErrMessageTooBig {
				t.Fatalf(
					"payload %d: limit len-1: err = %v, want ErrMessageTooBig",
					i, err)
			}
		}
	}
}

func TestDecompressRFC7692Examples(t *testing.T) {
	var d Decompressor
	cases := []struct {
		name string
		in   []byte
		want string
	}{
		// §7.2.3.1: "Hello" compressed.
		{name: "hello", in: []byte{0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}, want: "Hello"},
		// §7.2.3.3: no compression (stored block).
		{name: "stored", in: []byte{0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00}, want: "Hello"},
		// §7.2.3.4: BFINAL set.
		{name: "bfinal", in: []byte{0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00}, want: "Hello"},
		// §7.2.3.5: two deflate blocks.
		{name: "two blocks", in: []byte{0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00}, want: "Hello"},
		// An empty message as one 0x00 byte (§7.2.3.6).
		{name: "empty", in: []byte{0x00}, want: ""},
		{name: "empty payload", in: nil, want: ""},
	}
	for _, tc := range cases {
		got, err := d.Decompress(nil, tc.in, 100)
		if err != nil || string(got) != tc.want {
			t.Fatalf(
				"%s: %q, %v; want %q",
				tc.name, got, err, tc.want)
		}
	}
}

func TestDecompressBomb(t *testing.T) {
	// 64 MiB of zeros compresses to ~64 KiB; the limit stops it at 1 MiB
	// with a buffer that never grows past limit+1.
	var c Compressor
	bomb, err := c.Compress(nil, make([]byte, 64<<20))
	if err != nil {
		t.Fatal(err)
	}
	var d Decompressor
	got, err := d.Decompress(nil, bomb, 1<<20)
	if err != ErrMessageTooBig || len(got) != 0 {
		t.Fatalf(
			"bomb: %d bytes, %v",
			len(got), err)
	}
	if CloseCode(err) != ws.StatusMessageTooBig {
		t.Fatalf(
			"bomb close code %d",
			CloseCode(err))
	}
	if cap(got) > 1<<20+1 {
		t.Fatalf(
			"output buffer grew to %d bytes for a limit of %d",
			cap(got), 1<<20)
	}
	// The Decompressor is reusable after a failure.
	ok, err := d.Decompress(nil, []byte{0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}, 5)
	if err != nil || string(ok) != "Hello" {
		t.Fatalf(
			"after bomb: %q %v",
			ok, err)
	}
}

func TestDecompressCorrupt(t *testing.T) {
	var d Decompressor
	for _, in := range [][]byte{{0xff, 0xff, 0xff}, {0x07}, []byte("not deflate at all")} {
		_, err := d.Decompress(nil, in, 1000)
		if !errors.Is(err, ErrDeflateData) || CloseCode(err) != ws.StatusInvalidFramePayloadData {
			t.Fatalf(
				"corrupt % x: err = %v (code %d)",
				in, err, CloseCode(err))
		}
	}
}

func TestDeflateAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not exact under -race")
	}
	payload := benchJSON(4096)
	var c Compressor
	var d Decompressor
	z, _ := c.Compress(nil, payload)
	zbuf := make([]byte, 0, 2*len(z))
	out := make([]byte, 0, len(payload)+1)
	c.Compress(zbuf, payload)
	d.Decompress(out, z, 1<<20)
	allocs := testing.AllocsPerRun(50, func() {
		c.Compress(zbuf[:0], payload)
		d.Decompress(out[:0], z, 1<<20)
	})
	if allocs != 0 {
		t.Fatalf(
			"Compress+Decompress with warm state and big enough buffers: %v allocs per run, want 0",
			allocs)
	}
}

func TestCompileFrameCompressed(t *testing.T) {
	var c Compressor
	payload := benchJSON(2000)
	frame, err := c.CompileFrame(ws.OpText, payload)
	if err != nil {
		t.Fatal(err)
	}
	if len(frame) != cap(frame) {
		t.Fatalf(
			"frame len %d cap %d",
			len(frame), cap(frame))
	}
	// A client-side parser that negotiated deflate sees one compressed
	// text message.
	var p Parser
	p.Init(&Config{Role: RoleClient, AllowRSV1: true})
	ch, n, ok, err := p.Next(bytes.Clone(frame))
	if err != nil || !ok || n != len(frame) || !ch.Compressed || !ch.MsgEnd || ch.MsgOp != ws.OpText {
		t.Fatalf(
			"parse: %+v %d %v %v",
			ch.Header, n, ok, err)
	}
	var d Decompressor
	got, err := d.Decompress(nil, ch.Payload, 1<<20)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf(
			"inflate: %d bytes, %v",
			len(got), err)
	}
}

func opt(s string) httphead.Option {
	opts, ok := httphead.ParseOptions([]byte(s), nil)
	if !ok || len(opts) != 1 {
		panic("bad option " + s)
	}
	return opts[0]
}

func TestNegotiateDeflate(t *testing.T) {
	cases := []struct {
		offer string
		ok    bool
	}{
		{offer: "permessage-deflate", ok: true},
		{offer: "permessage-deflate; client_max_window_bits", ok: true},
		{offer: "permessage-deflate; client_max_window_bits=10", ok: true},
		{offer: "permessage-deflate; server_no_context_takeover; client_no_context_takeover", ok: true},
		{offer: "permessage-deflate; server_max_window_bits=15", ok: true},
		{offer: "permessage-deflate; server_max_window_bits=10", ok: false},
		{offer: "permessage-deflate; server_max_window_bits", ok: false},
		{offer: "permessage-deflate; server_max_window_bits=16", ok: false},
		{offer: "permessage-deflate; client_max_window_bits=7", ok: false},
		{offer: "permessage-deflate; unknown_param", ok: false},
		{offer: "permessage-deflate; server_no_context_takeover; server_no_context_takeover", ok: false},
		{offer: "permessage-deflate; server_no_context_takeover=1", ok: false},
		{offer: "x-webkit-deflate-frame", ok: false},
	}
	for _, tc := range cases {
		resp, params, ok := NegotiateDeflate(opt(tc.offer))
		if ok != tc.ok {
			t.Fatalf(
				"%q: ok = %v, want %v",
				tc.offer, ok, tc.ok)
		}
		if !ok {
			continue
		}
		want := wsflate.Parameters{ServerNoContextTakeover: true, ClientNoContextTakeover: true}
		if params != want {
			t.Fatalf(
				"%q: params %+v",
				tc.offer, params)
		}
		var back wsflate.Parameters
		if err := back.Parse(resp); err != nil || back != want || string(resp.Name) != DeflateExtension {
			t.Fatalf(
				"%q: response %v does not parse back: %v",
				tc.offer, resp, err)
		}
	}
	if _, err := ParseDeflateOffer(opt("permessage-deflate; bogus")); !errors.Is(err, ErrNegotiation) {
		t.Fatalf(
			"ParseDeflateOffer error %v does not wrap ErrNegotiation",
			err)
	}
}

func TestNegotiateDeflateHeader(t *testing.T) {
	cases := []struct {
		header string
		ok     bool
	}{
		{header: "permessage-deflate; client_max_window_bits", ok: true},
		{header: "permessage-deflate; server_max_window_bits=9, permessage-deflate", ok: true},
		{header: "foo, permessage-deflate; server_max_window_bits=9", ok: false},
		{header: "", ok: false},
		{header: "permessage-deflate; =", ok: false},
	}
	for _, tc := range cases {
		resp, ok := NegotiateDeflateHeader([]byte(tc.header))
		if ok != tc.ok || (ok && resp != DeflateResponse) {
			t.Fatalf(
				"%q: %q, %v; want ok=%v",
				tc.header, resp, ok, tc.ok)
		}
	}
}

func TestDeflateNegotiator(t *testing.T) {
	var n DeflateNegotiator
	r1, _ := n.Negotiate(opt("permessage-deflate; server_max_window_bits=8"))
	r2, _ := n.Negotiate(opt("permessage-deflate"))
	r3, _ := n.Negotiate(opt("permessage-deflate"))
	if r1.Size() != 0 || r2.Size() == 0 || r3.Size() != 0 || !n.Accepted() {
		t.Fatalf(
			"negotiator: %v / %v / %v accepted=%v",
			r1, r2, r3, n.Accepted())
	}
}

func TestInflatedSize(t *testing.T) {
	var c Compressor
	var d Decompressor
	for _, n := range []int{0, 1, 100, 16 << 10, 16<<10 + 1, 100 << 10} {
		payload := benchJSON(n)[:n]
		z, err := c.Compress(nil, payload)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := d.InflatedSize(z, 1<<20); err != nil || got != int64(n) {
			t.Fatalf("size %d: InflatedSize = %d, %v", n, got, err)
		}
		if n > 1 { // limit 0 means none
			if _, err := d.InflatedSize(z, int64(n-1)); err != ErrMessageTooBig {
				t.Fatalf("size %d, limit %d: %v, want ErrMessageTooBig", n, n-1, err)
			}
		}
		if got, err := d.InflatedSize(z, int64(n)); err != nil || got != int64(n) {
			t.Fatalf("size %d at limit: %d, %v", n, got, err)
		}
	}
	bomb, _ := c.Compress(nil, make([]byte, 10<<20))
	if _, err := d.InflatedSize(bomb, 1<<20); err != ErrMessageTooBig {
		t.Fatalf("bomb: %v", err)
	}
	if cap(d.scratch) != inflatedSizeScratch {
		t.Fatalf("scratch grew to %d", cap(d.scratch))
	}
	if _, err := d.InflatedSize([]byte{0xff, 0xff, 0xff}, 1000); !errors.Is(err, ErrDeflateData) {
		t.Fatalf("corrupt: %v", err)
	}
	if raceEnabled {
		return
	}
	z, _ := c.Compress(nil, benchJSON(4096))
	if allocs := testing.AllocsPerRun(50, func() { _, _ = d.InflatedSize(z, 1<<20) }); allocs != 0 {
		t.Fatalf("InflatedSize with warm state: %v allocs per run, want 0", allocs)
	}
}

// FuzzDecompress: inflating arbitrary bytes never panics, never returns
// more than the limit, and InflatedSize agrees with Decompress.
func FuzzDecompress(f *testing.F) {
	var c Compressor
	for _, p := range [][]byte{nil, []byte("Hello"), benchJSON(2048), make([]byte, 1<<16)} {
		z, _ := c.Compress(nil, p)
		f.Add(z, uint16(4096))
	}
	f.Add([]byte{0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}, uint16(5))
	f.Add([]byte{0xff, 0xfe, 0xfd}, uint16(100))
	f.Fuzz(func(t *testing.T, in []byte, lim uint16) {
		limit := int64(lim)
		var d Decompressor
		out, err := d.Decompress(nil, in, limit)
		n, serr := d.InflatedSize(in, limit)
		if limit > 0 && int64(len(out)) > limit {
			t.Fatalf("Decompress returned %d bytes for limit %d", len(out), limit)
		}
		if (err == nil) != (serr == nil) || err == nil && n != int64(len(out)) {
			t.Fatalf("Decompress: %d bytes, %v; InflatedSize: %d, %v", len(out), err, n, serr)
		}
		if errors.Is(err, ErrMessageTooBig) != errors.Is(serr, ErrMessageTooBig) {
			t.Fatalf("Decompress %v, InflatedSize %v", err, serr)
		}
	})
}
