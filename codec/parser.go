package codec

import (
	"github.com/gobwas/ws"
)

// Role says which side of the connection parses.
type Role uint8

// Roles.
const (
	RoleServer Role = iota // inbound frames must be masked (client->server)
	RoleClient             // inbound frames must NOT be masked
)

// String returns "server" or "client".
func (r Role) String() string {
	if r == RoleClient {
		return "client"
	}
	return "server"
}

// Config holds the parse limits. It is immutable after construction and
// shared by many Parsers through a pointer; it is safe for concurrent reads.
type Config struct {
	Role           Role
	MaxFrameSize   int64 // 0 means no limit; payload length above it -> ErrFrameTooBig (1009)
	MaxMessageSize int64 // 0 means no limit; sum of fragments above it -> ErrMessageTooBig (1009)
	AllowRSV1      bool  // permessage-deflate negotiated: RSV1 allowed on the first frame of a data message
}

// Chunk is one piece of one frame's payload, already unmasked in place.
type Chunk struct {
	// Header is the current frame's header as received: Masked/Mask as on
	// the wire, Length the full frame payload length, OpCode 0 for a
	// continuation frame.
	Header ws.Header
	// MsgOp is OpText/OpBinary for data frames (also for continuations),
	// the control opcode for control frames.
	MsgOp ws.OpCode
	// Payload holds unmasked bytes: a sub-slice of the input passed to Next,
	// not copied, valid while the input is.
	Payload []byte
	// First is true for the first chunk of this frame (also for an
	// empty-payload frame).
	First bool
	// FrameEnd is true for the last chunk of this frame.
	FrameEnd bool
	// MsgEnd is FrameEnd of a FIN frame (control frames: always at FrameEnd).
	MsgEnd bool
	// Compressed is true for every chunk of a data message whose first frame
	// had RSV1 set (permessage-deflate, RFC 7692 §6). Its payload is
	// compressed, so Next does not UTF-8 check it: inflate it (Inflater) and
	// validate the result.
	Compressed bool
}

// Parser flag bits.
const (
	flagInFrame    = 1 << iota // header parsed, payload pending
	flagFirst                  // next chunk is the frame's first
	flagCompressed             // current data message has RSV1
	flagText                   // current data message is text and not compressed
)

// Parser is the per-connection incremental frame parser (RFC 6455 §5). It
// keeps at most 13 bytes of a partial header, the current frame header, the
// running mask offset, the fragmented-message state and the UTF-8 state: 64
// bytes on 64-bit platforms, including the *Config.
//
// A Parser is not safe for concurrent use; it belongs to one connection. The
// zero value is a server-side parser without limits; Init sets a Config.
// After Next returns an error the connection must be failed: the state is
// not meaningful until Reset.
type Parser struct {
	cfg    *Config
	hdr    ws.Header // current frame
	left   int64     // payload bytes of the current frame not yet returned
	msgLen int64     // payload bytes of the current data message so far
	hbuf   [ws.MaxHeaderSize]byte
	hn     uint8     // bytes of a partial header in hbuf
	moff   uint8     // mask offset (0..3) for the next payload byte
	fragOp ws.OpCode // opcode of the fragmented data message in progress, 0 if none
	flags  uint8
	utf8   UTF8
}

// Init resets all state and sets the configuration. cfg is not copied and
// must not change afterwards; nil means the zero Config.
func (p *Parser) Init(cfg *Config) {
	*p = Parser{cfg: cfg}
}

// Reset resets all state and keeps the configuration.
func (p *Parser) Reset() {
	*p = Parser{cfg: p.cfg}
}

// InFrame reports whether Next is in the middle of a frame (header bytes or
// payload bytes pending). A connection closed while InFrame is truncated.
func (p *Parser) InFrame() bool {
	return p.hn != 0 || p.flags&flagInFrame != 0
}

// Idle reports whether the parser is between messages: no partial header,
// no frame payload pending and no fragmented message in progress. An idle
// parser holds no state a fresh one (Init with the same Config) lacks, so
// a connection may drop it and parse its next bytes with a new one.
func (p *Parser) Idle() bool {
	return p.hn == 0 && p.flags&flagInFrame == 0 && p.fragOp == 0
}

// InMessage reports whether a data message is in progress: its first frame
// has been parsed and its FIN frame has not ended yet.
func (p *Parser) InMessage() bool {
	return p.fragOp != 0
}

// Next parses input b (whatever the socket delivered, continuing from
// previous calls). It returns n = bytes consumed from b, ok = a chunk was
// produced (c valid), or err (an *Error).
//
// ok == false with err == nil means every byte of b was consumed
// (n == len(b)) and more input is needed (up to 13 bytes of a partial header
// are stored inside p). When ok is true, call Next again with b[n:] for the
// rest. Next unmasks payload bytes IN PLACE in b (b must be writable).
//
// Text data (including fragmented text, and code points split across frames
// and across calls) is UTF-8 validated incrementally and fails with
// ErrInvalidUTF8 as soon as an invalid byte is seen; a text message whose
// last frame ends in the middle of a code point fails at MsgEnd. Frame and
// message size limits and every RFC 6455 §5 validation are checked when the
// header completes, before any payload is returned. A zero-length frame
// yields one chunk with First = FrameEnd = true.
//
// Next never allocates and never panics on any input.
func (p *Parser) Next(b []byte) (c Chunk, n int, ok bool, err error) {
	if p.flags&flagInFrame == 0 {
		n, err = p.readHeader(b)
		if err != nil || p.flags&flagInFrame == 0 {
			return c, n, false, err
		}
	}
	m := p.left
	if avail := int64(len(b) - n); avail < m {
		m = avail
	}
	if m == 0 && p.left > 0 {
		return c, n, false, nil
	}
	pl := b[n : n+int(m)]
	n += int(m)
	// hi == 0 means the payload bytes are ASCII; unmask finds out for free
	// while it XORs, which saves the UTF-8 pass for most text.
	hi := uint64(1)
	if p.hdr.Masked {
		var off int
		off, hi = unmask(pl, p.hdr.Mask, int(p.moff))
		p.moff = uint8(off)
	}
	p.left -= m

	c.Header = p.hdr
	c.MsgOp = p.hdr.OpCode
	c.Payload = pl
	c.First = p.flags&flagFirst != 0
	c.FrameEnd = p.left == 0
	c.MsgEnd = c.FrameEnd && p.hdr.Fin
	p.flags &^= flagFirst
	if c.MsgOp.IsControl() {
		if c.FrameEnd {
			p.flags &^= flagInFrame
		}
		return c, n, true, nil
	}

	if c.MsgOp == ws.OpContinuation {
		c.MsgOp = p.fragOp
	}
	c.Compressed = p.flags&flagCompressed != 0
	if p.flags&flagText != 0 && (hi != 0 || p.utf8.s != u8Accept) {
		if !p.utf8.Write(pl) {
			return Chunk{}, n - int(m), false, ErrInvalidUTF8
		}
		if c.MsgEnd && !p.utf8.Complete() {
			return Chunk{}, n - int(m), false, ErrInvalidUTF8
		}
	}
	if c.FrameEnd {
		p.flags &^= flagInFrame
		if c.MsgEnd {
			p.fragOp = 0
			p.msgLen = 0
			p.flags &^= flagCompressed | flagText
		}
	}
	return c, n, true, nil
}

// readHeader consumes header bytes from b. On a complete, valid header it
// sets flagInFrame; otherwise it stores the partial header and returns
// len(b).
func (p *Parser) readHeader(b []byte) (int, error) {
	var (
		n   int
		err error
	)
	if p.hn == 0 {
		// Fast path: the whole header is in b, parse it in place.
		n, err = parseHeader(&p.hdr, b)
		if err == ErrShortHeader {
			// len(b) < 14 here, so it fits.
			p.hn = uint8(copy(p.hbuf[:], b))
			return len(b), nil
		}
		if err != nil {
			return 0, err
		}
	} else {
		need := NeedHeaderBytes(p.hbuf[:p.hn])
		for {
			k := copy(p.hbuf[p.hn:need], b[n:])
			p.hn += uint8(k)
			n += k
			if int(p.hn) < need {
				return n, nil
			}
			next := NeedHeaderBytes(p.hbuf[:p.hn])
			if next == need {
				break
			}
			need = next
		}
		_, err = parseHeader(&p.hdr, p.hbuf[:p.hn])
		p.hn = 0
		if err != nil {
			return n, err
		}
	}
	if err = p.check(&p.hdr); err != nil {
		return n, err
	}
	p.left = p.hdr.Length
	p.moff = 0
	p.flags |= flagInFrame | flagFirst
	return n, nil
}

// check applies the RFC 6455 §5 rules and the configured limits to a new
// frame header and, for data frames, updates the message state.
func (p *Parser) check(h *ws.Header) error {
	var cfg Config
	if p.cfg != nil {
		cfg = *p.cfg
	}
	op := h.OpCode
	if op.IsReserved() {
		return ErrReservedOpcode
	}
	// RFC 7692 §6: RSV1 marks the first frame of a compressed message; it is
	// never set on control or continuation frames. RSV2/RSV3 have no meaning.
	if h.Rsv != 0 && (h.Rsv != rsv1 || !cfg.AllowRSV1 || op.IsControl() || op == ws.OpContinuation) {
		return ErrRSV
	}
	if op.IsControl() {
		if !h.Fin {
			return ErrControlFragmented
		}
		if h.Length > ws.MaxControlFramePayloadSize {
			return ErrControlTooBig
		}
	}
	if cfg.Role == RoleServer && !h.Masked {
		return ErrMaskRequired
	}
	if cfg.Role == RoleClient && h.Masked {
		return ErrMaskForbidden
	}
	if op.IsControl() {
		return nil
	}
	if op == ws.OpContinuation {
		if p.fragOp == 0 {
			return ErrContinuationWithoutStart
		}
	} else if p.fragOp != 0 {
		return ErrDataInsideFragmented
	}
	if cfg.MaxFrameSize > 0 && h.Length > cfg.MaxFrameSize {
		return ErrFrameTooBig
	}
	prior := p.msgLen // bytes of this message before this frame
	if op != ws.OpContinuation {
		prior = 0
	}
	if cfg.MaxMessageSize > 0 && h.Length > cfg.MaxMessageSize-prior {
		return ErrMessageTooBig
	}
	if op != ws.OpContinuation {
		// First frame of a new data message.
		p.fragOp = op
		p.msgLen = 0
		p.flags &^= flagCompressed | flagText
		if h.Rsv == rsv1 {
			p.flags |= flagCompressed
		} else if op == ws.OpText {
			p.flags |= flagText
			p.utf8 = UTF8{}
		}
	}
	// Saturate: without a limit the sum only needs to stay non-negative.
	if prior > maxInt64-h.Length {
		p.msgLen = maxInt64
	} else {
		p.msgLen = prior + h.Length
	}
	return nil
}

const maxInt64 = 1<<63 - 1
