package codec

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/gobwas/ws"
)

// frameEv is one whole frame as reassembled from the chunks Next returned.
type frameEv struct {
	Op         ws.OpCode // as on the wire
	MsgOp      ws.OpCode
	Fin        bool
	Rsv        byte
	Payload    string
	MsgEnd     bool
	Compressed bool
}

func (e frameEv) String() string {
	return fmt.Sprintf("{op=%d msgop=%d fin=%v rsv=%d len=%d end=%v z=%v %q}",
		e.Op, e.MsgOp, e.Fin, e.Rsv, len(e.Payload), e.MsgEnd, e.Compressed, e.Payload)
}

// parseResult is what feeding a stream to a Parser produced.
type parseResult struct {
	Frames  []frameEv
	Err     error
	InFrame bool // input ended inside a frame
}

func (r parseResult) equal(o parseResult) bool {
	if r.Err != o.Err || r.InFrame != o.InFrame || len(r.Frames) != len(o.Frames) {
		return false
	}
	for i := range r.Frames {
		if r.Frames[i] != o.Frames[i] {
			return false
		}
	}
	return true
}

// feedPieces feeds pieces, in order, to a fresh Parser with cfg, checking
// the Next contract on every call. Pieces are modified (unmasked) in place.
func feedPieces(cfg *Config, pieces [][]byte) (parseResult, error) {
	var (
		p   Parser
		res parseResult
		cur []byte
		in  bool // inside a frame's payload according to the chunks
	)
	p.Init(cfg)
	for _, b := range pieces {
		// Every chunk consumes at least one byte (a zero-length frame's
		// chunk comes with the last byte of its header).
		maxCalls := len(b) + 1
		for calls := 1; ; calls++ {
			if calls > maxCalls {
				return res, fmt.Errorf("no progress: %d calls on %d bytes", calls, maxCalls-1)
			}
			c, n, ok, err := p.Next(b)
			if n < 0 || n > len(b) {
				return res, fmt.Errorf("n=%d out of range 0..%d", n, len(b))
			}
			if err != nil {
				if ok {
					return res, fmt.Errorf("ok with error %v", err)
				}
				res.Err = err
				return res, nil
			}
			if !ok {
				if n != len(b) {
					return res, fmt.Errorf("need more with n=%d < len=%d", n, len(b))
				}
				if p.Need() < 1 {
					return res, fmt.Errorf("need more but Need() = %d", p.Need())
				}
				break
			}
			if c.First == in {
				return res, fmt.Errorf("chunk First=%v inside frame=%v", c.First, in)
			}
			if len(c.Payload) > 0 && !bytes.Equal(c.Payload, b[n-len(c.Payload):n]) {
				return res, fmt.Errorf("payload is not the tail of the consumed bytes")
			}
			if c.MsgEnd && !c.FrameEnd {
				return res, fmt.Errorf("MsgEnd without FrameEnd")
			}
			in = !c.FrameEnd
			cur = append(cur, c.Payload...)
			if c.FrameEnd {
				if int64(len(cur)) != c.Header.Length {
					return res, fmt.Errorf("frame payload %d bytes, header says %d", len(cur), c.Header.Length)
				}
				res.Frames = append(res.Frames, frameEv{
					Op:         c.Header.OpCode,
					MsgOp:      c.MsgOp,
					Fin:        c.Header.Fin,
					Rsv:        c.Header.Rsv,
					Payload:    string(cur),
					MsgEnd:     c.MsgEnd,
					Compressed: c.Compressed,
				})
				cur = cur[:0]
			}
			b = b[n:]
		}
	}
	res.InFrame = p.InFrame()
	return res, nil
}

// splitAt returns a copy of stream cut at the given sorted offsets.
func splitAt(stream []byte, cuts ...int) [][]byte {
	s := bytes.Clone(stream)
	var out [][]byte
	prev := 0
	for _, c := range cuts {
		if c < prev || c > len(s) {
			continue
		}
		out = append(out, s[prev:c])
		prev = c
	}
	return append(out, s[prev:])
}

// byteByByte returns a copy of stream as one-byte pieces.
func byteByByte(stream []byte) [][]byte {
	s := bytes.Clone(stream)
	out := make([][]byte, len(s))
	for i := range s {
		out[i] = s[i : i+1]
	}
	return out
}

func mustFeed(t *testing.T, cfg *Config, pieces [][]byte) parseResult {
	t.Helper()
	res, err := feedPieces(cfg, pieces)
	if err != nil {
		t.Fatalf(
			"contract violation: %v",
			err)
	}
	return res
}

// cat concatenates frames into one stream.
func cat(frames ...[]byte) []byte {
	return bytes.Join(frames, nil)
}

// mframe is a masked client frame with a fixed key.
func mframe(op ws.OpCode, fin bool, payload string) []byte {
	return AppendMaskedFrame(nil, op, fin, []byte(payload), [4]byte{0x37, 0xfa, 0x21, 0x3d})
}

// rawHeader builds a masked header with arbitrary first byte and length,
// followed by a masked payload of n bytes of 'a'.
func rawFrame(b0 byte, masked bool, payload string) []byte {
	h := ws.Header{
		Fin:    b0&0x80 != 0,
		Rsv:    (b0 >> 4) & 7,
		OpCode: ws.OpCode(b0 & 0xf),
		Masked: masked,
		Mask:   [4]byte{1, 2, 3, 4},
		Length: int64(len(payload)),
	}
	hb := make([]byte, ws.MaxHeaderSize)
	n := WriteHeader(hb, h)
	out := append(hb[:n], payload...)
	if masked {
		Unmask(out[n:], h.Mask, 0)
	}
	return out
}
