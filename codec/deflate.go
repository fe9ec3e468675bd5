package codec

import (
	"bytes"
	"fmt"
	"io"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
	"github.com/klauspost/compress/flate"
)

// permessage-deflate (RFC 7692) helpers.
//
// pushd negotiates no context takeover in both directions (§7.1.1): every
// message is compressed and decompressed on its own. That is what lets one
// compressed frame serve every subscriber of a broadcast (encode once), and
// it means no connection keeps a 32 KiB LZ77 window between messages.
//
// The flate implementation is github.com/klauspost/compress/flate, chosen by
// BenchmarkDeflateCompress and BenchmarkDeflateDecompress against
// compress/flate on pushd-like JSON (medians of 5, same run, this machine):
// level 1 compresses 1.5x (512 B), 1.8x (4 KiB) and 1.7x (64 KiB) faster
// than compress/flate level 1, with smaller output (ratio 0.378 vs 0.401,
// 0.224 vs 0.267, 0.170 vs 0.183), and needs 480 KiB of state instead of
// 1.1 MiB; it inflates 1.2x, 1.4x and 1.5x faster.

// DeflateExtension is the extension name, RFC 7692 §7.
const DeflateExtension = "permessage-deflate"

// DeflateResponse is the Sec-WebSocket-Extensions value pushd answers with
// when it accepts an offer: no context takeover either way, the server's
// window left at its 15-bit default (RFC 7692 §7.1.1, §7.1.2).
const DeflateResponse = DeflateExtension + "; server_no_context_takeover; client_no_context_takeover"

// deflateTail is appended to a received message before inflating it
// (RFC 7692 §7.2.2): the 0x00 0x00 0xff 0xff that the sender removed, then an
// empty final stored block so that the inflater reports io.EOF instead of
// io.ErrUnexpectedEOF.
const deflateTail = "\x00\x00\xff\xff\x01\x00\x00\xff\xff"

// DefaultDeflateLevel is the compression level used when Compressor.Level is
// 0: klauspost level 1, the fastest with Huffman+LZ77 (see
// BenchmarkDeflateCompress for the size/speed trade-off).
const DefaultDeflateLevel = 1

// ParseDeflateOffer parses one permessage-deflate offer (an element of
// Sec-WebSocket-Extensions, RFC 7692 §7.1). Unknown, duplicated or invalid
// parameters fail with an error wrapping ErrNegotiation; the offer must then
// be declined.
func ParseDeflateOffer(offer httphead.Option) (wsflate.Parameters, error) {
	var p wsflate.Parameters
	if string(offer.Name) != DeflateExtension {
		return p, fmt.Errorf("%w: extension %q is not %s", ErrNegotiation, offer.Name, DeflateExtension)
	}
	if err := p.Parse(offer); err != nil {
		return p, fmt.Errorf("%w: %w", ErrNegotiation, err)
	}
	return p, nil
}

// NegotiateDeflate decides on one offer. It accepts a valid permessage-deflate
// offer unless it asks for server_max_window_bits below 15: pushd compresses
// with a 32 KiB window and shares the compressed frame between subscribers,
// so it declines rather than compress per connection (§7.1.2.1 allows
// declining). client_max_window_bits is accepted whatever its value: the
// inflater handles every window up to 15 bits, and the response does not
// carry it (§7.1.2.2). The response always sets both no_context_takeover
// parameters (§7.1.1.1, §7.1.1.2: the server may add them unasked).
func NegotiateDeflate(offer httphead.Option) (resp httphead.Option, params wsflate.Parameters, ok bool) {
	p, err := ParseDeflateOffer(offer)
	if err != nil {
		return resp, params, false
	}
	if p.ServerMaxWindowBits.Defined() && p.ServerMaxWindowBits < 15 {
		return resp, params, false
	}
	params = wsflate.Parameters{ServerNoContextTakeover: true, ClientNoContextTakeover: true}
	return params.Option(), params, true
}

// NegotiateDeflateHeader scans a whole Sec-WebSocket-Extensions value and
// accepts the first acceptable permessage-deflate offer (offers are listed in
// the client's order of preference, RFC 6455 §9.1). It returns
// DeflateResponse when one is accepted. Malformed headers are declined.
func NegotiateDeflateHeader(value []byte) (resp string, ok bool) {
	opts, valid := httphead.ParseOptions(value, nil)
	if !valid {
		return "", false
	}
	for _, o := range opts {
		if _, _, ok := NegotiateDeflate(o); ok {
			return DeflateResponse, true
		}
	}
	return "", false
}

// DeflateNegotiator adapts NegotiateDeflate to ws.Upgrader.Negotiate, which
// is called once per offered extension: it accepts the first acceptable
// permessage-deflate offer and ignores the rest. Use one per upgrade (not
// goroutine safe); Accepted tells the outcome.
type DeflateNegotiator struct {
	accepted bool
}

// Negotiate implements the ws.Upgrader.Negotiate callback. It never fails
// the handshake: unacceptable offers are declined with a zero option.
func (n *DeflateNegotiator) Negotiate(offer httphead.Option) (httphead.Option, error) {
	if n.accepted {
		return httphead.Option{}, nil
	}
	resp, _, ok := NegotiateDeflate(offer)
	if ok {
		n.accepted = true
	}
	return resp, nil
}

// Accepted reports whether an offer was accepted: set Config.AllowRSV1.
func (n *DeflateNegotiator) Accepted() bool { return n.accepted }

// appendWriter is an io.Writer appending to a slice.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// Compressor compresses whole messages for permessage-deflate without
// context takeover (RFC 7692 §7.2.1). Its zero value is ready; it holds
// about 480 KiB of flate state once used at level 1 (740 KiB at levels 5-9;
// compress/flate's level 1 needs 1.1 MiB), so keep one per worker, not per
// connection. Not goroutine safe; do not copy after first use.
type Compressor struct {
	// Level is the flate level, 1 (fastest) to 9 (smallest); 0 means
	// DefaultDeflateLevel. Set it before the first use.
	Level int

	w       *flate.Writer
	out     appendWriter
	scratch []byte // CompileFrame's compression buffer, reused
}

// Compress appends the compressed form of payload to dst, ready to be a
// message payload with RSV1 set: compressed on its own (no context
// takeover), flushed, and with the trailing 0x00 0x00 0xff 0xff removed
// (§7.2.1). It allocates only when dst has no room.
func (c *Compressor) Compress(dst, payload []byte) ([]byte, error) {
	c.out.b = dst
	if c.w == nil {
		level := c.Level
		if level == 0 {
			level = DefaultDeflateLevel
		}
		w, err := flate.NewWriter(&c.out, level)
		if err != nil {
			return dst, fmt.Errorf("codec: deflate level %d: %w", level, err)
		}
		c.w = w
	} else {
		c.w.Reset(&c.out)
	}
	if _, err := c.w.Write(payload); err != nil {
		return dst, fmt.Errorf("codec: deflate: %w", err)
	}
	if err := c.w.Flush(); err != nil {
		return dst, fmt.Errorf("codec: deflate: %w", err)
	}
	out := c.out.b
	c.out.b = nil
	if !bytes.HasSuffix(out[len(dst):], []byte(deflateTail[:4])) {
		return dst, fmt.Errorf("codec: deflate: flushed output does not end with 00 00 ff ff")
	}
	return out[:len(out)-4], nil
}

// CompileFrame compresses payload and returns one complete FIN frame with
// RSV1 set (server side, unmasked), sized exactly, to be shared read-only by
// every subscriber (broadcast: compress once). op is OpText or OpBinary.
func (c *Compressor) CompileFrame(op ws.OpCode, payload []byte) ([]byte, error) {
	z, err := c.Compress(c.scratch[:0], payload)
	if err != nil {
		return nil, err
	}
	c.scratch = z[:0]
	return CompileCompressedFrame(op, z), nil
}

// reset points the inflater at compressed plus deflateTail.
func (d *Decompressor) reset(compressed []byte) error {
	// The inflater has a fast path for *bytes.Reader (no interface call per
	// input byte): copying the message next to the tail costs less than it
	// saves (BenchmarkDeflateDecompress, impl=codec vs impl=klauspost). The
	// copy is kept, so d retains the largest compressed message's size.
	d.in = append(append(d.in[:0], compressed...), deflateTail...)
	d.src.Reset(d.in)
	if d.r == nil {
		d.r = flate.NewReader(&d.src)
	} else if err := d.r.(flate.Resetter).Reset(&d.src, nil); err != nil {
		return fmt.Errorf("%w: %w", ErrDeflateData, err)
	}
	return nil
}

// inflatedSizeScratch is the buffer InflatedSize inflates through.
const inflatedSizeScratch = 16 << 10

// InflatedSize inflates the compressed message payload without keeping the
// output and returns its size, or ErrMessageTooBig as soon as it passes
// limit (limit <= 0: no limit), or an error wrapping ErrDeflateData. It
// needs a 16 KiB scratch buffer (kept in d) and nothing that grows with
// the output: a caller can size a buffer exactly, or refuse a
// decompression bomb, before allocating for it.
func (d *Decompressor) InflatedSize(compressed []byte, limit int64) (int64, error) {
	if len(compressed) == 0 {
		return 0, nil
	}
	if err := d.reset(compressed); err != nil {
		return 0, err
	}
	if limit <= 0 {
		limit = maxInt64 - 1
	}
	if d.scratch == nil {
		d.scratch = make([]byte, inflatedSizeScratch)
	}
	var n int64
	for {
		m, err := d.r.Read(d.scratch)
		n += int64(m)
		if n > limit {
			return 0, ErrMessageTooBig
		}
		switch err {
		case nil:
		case io.EOF:
			return n, nil
		default:
			return 0, fmt.Errorf("%w: %w", ErrDeflateData, err)
		}
	}
}

// Decompressor inflates whole permessage-deflate messages (RFC 7692 §7.2.2)
// received without context takeover, with a hard limit on the output. Its
// zero value is ready; it holds about 36 KiB of inflate state once used. Not
// goroutine safe; do not copy after first use.
type Decompressor struct {
	r       io.ReadCloser
	in      []byte // the message and deflateTail, reused
	src     bytes.Reader
	scratch []byte // InflatedSize's output, discarded
}

// Decompress appends the inflated form of the compressed message payload
// (all its frames' payloads concatenated, as received) to dst. Output beyond
// limit bytes fails with ErrMessageTooBig (close 1009) as soon as the limit
// is crossed: the output buffer never grows past limit+1 bytes, whatever the
// input claims (decompression bombs). limit <= 0 means no limit. Data that
// does not inflate fails with an error wrapping ErrDeflateData (close 1007).
// On error dst is returned unchanged in length. An empty compressed payload
// is the empty message.
func (d *Decompressor) Decompress(dst, compressed []byte, limit int64) ([]byte, error) {
	if len(compressed) == 0 {
		// Not valid DEFLATE even with the tail (senders use a single 0x00
		// for an empty message, §7.2.3.6), but unambiguous: accept it as
		// the empty message.
		return dst, nil
	}
	if err := d.reset(compressed); err != nil {
		return dst, err
	}
	if limit <= 0 {
		limit = maxInt64 - 1
	}
	start := len(dst)
	for {
		// Room to read: at most limit+1 bytes of output in total, so that
		// crossing the limit is seen without reading (or allocating) more.
		room := limit + 1 - int64(len(dst)-start)
		if room <= 0 {
			return dst[:start], ErrMessageTooBig
		}
		if len(dst) == cap(dst) {
			grow := max(len(dst)-start, 512, 2*len(compressed))
			if int64(grow) > room {
				grow = int(room)
			}
			// Exact growth (not append/slices.Grow, which round up): the
			// buffer never exceeds limit+1 bytes of output.
			nd := make([]byte, len(dst), len(dst)+grow)
			copy(nd, dst)
			dst = nd
		}
		buf := dst[len(dst):cap(dst)]
		if int64(len(buf)) > room {
			buf = buf[:room]
		}
		n, err := d.r.Read(buf)
		dst = dst[:len(dst)+n]
		if int64(len(dst)-start) > limit {
			return dst[:start], ErrMessageTooBig
		}
		switch err {
		case nil:
		case io.EOF:
			return dst, nil
		default:
			return dst[:start], fmt.Errorf("%w: %w", ErrDeflateData, err)
		}
	}
}
