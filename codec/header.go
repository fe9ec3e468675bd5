package codec

import (
	"encoding/binary"

	"github.com/gobwas/ws"
)

// Header layout constants (RFC 6455 §5.2).
const (
	bitFin    = 0x80
	bitMask   = 0x80
	rsv1      = 0x4 // ws.Header.Rsv value of RSV1 alone (ws.Rsv(true, false, false))
	len7Max   = 125
	len16Code = 126
	len64Code = 127
)

// NeedHeaderBytes returns the total size of the frame header that starts at
// b[0]: 2 while fewer than 2 bytes are known, then 2..14 depending on the
// length encoding and the MASK bit (RFC 6455 §5.2).
func NeedHeaderBytes(b []byte) int {
	if len(b) < 2 {
		return 2
	}
	return headerSize(b[1])
}

// headerSize returns the header size implied by the second header byte.
func headerSize(b1 byte) int {
	n := 2
	if b1&bitMask != 0 {
		n += 4
	}
	switch b1 & 0x7f {
	case len16Code:
		n += 2
	case len64Code:
		n += 8
	}
	return n
}

// ParseHeader parses the frame header at the start of b (RFC 6455 §5.2) and
// returns it with its size n. It returns ErrShortHeader when b holds only a
// prefix of the header (see NeedHeaderBytes) and ErrLengthMSB when a 64-bit
// length has its most significant bit set.
//
// ParseHeader checks only the encoding; protocol rules (opcodes, RSV bits,
// control frame limits, masking) are checked by Parser.Next and CheckHeader.
//
// Extended lengths are accepted even when not minimally encoded (e.g. 5
// encoded in 16 bits). RFC 6455 §5.2 says the sender MUST use the minimal
// encoding but does not ask the receiver to fail; like gobwas/ws, gorilla and
// nats, codec is lenient here: the length is still exact, so nothing is
// ambiguous and no limit can be bypassed. WriteHeader always encodes
// minimally.
func ParseHeader(b []byte) (h ws.Header, n int, err error) {
	n, err = parseHeader(&h, b)
	return h, n, err
}

// parseHeader is ParseHeader writing into *h, which it sets only on
// success; the parser decodes straight into its own header this way.
func parseHeader(h *ws.Header, b []byte) (int, error) {
	if len(b) < 2 {
		return 0, ErrShortHeader
	}
	b0, b1 := b[0], b[1]
	n := headerSize(b1)
	if len(b) < n {
		return 0, ErrShortHeader
	}
	var length int64
	i := 2
	switch l := b1 & 0x7f; l {
	case len16Code:
		length = int64(binary.BigEndian.Uint16(b[2:4]))
		i = 4
	case len64Code:
		v := binary.BigEndian.Uint64(b[2:10])
		if v>>63 != 0 {
			return 0, ErrLengthMSB
		}
		length = int64(v)
		i = 10
	default:
		length = int64(l)
	}
	var mask uint32
	if b1&bitMask != 0 {
		mask = binary.LittleEndian.Uint32(b[i : i+4])
	}
	setHeader(h, b0, b1, mask, length)
	return n, nil
}

// HeaderSize returns the number of bytes WriteHeader writes for h.
func HeaderSize(h ws.Header) int {
	n := 2
	switch {
	case h.Length <= len7Max:
	case h.Length <= 0xffff:
		n += 2
	default:
		n += 8
	}
	if h.Masked {
		n += 4
	}
	return n
}

// WriteHeader encodes h into dst with the minimal length encoding
// (RFC 6455 §5.2) and returns the number of bytes written. dst must have room
// for HeaderSize(h) bytes (ws.MaxHeaderSize always suffices); if it has not,
// or h.Length is negative, WriteHeader writes nothing and returns 0.
func WriteHeader(dst []byte, h ws.Header) int {
	n := HeaderSize(h)
	if len(dst) < n || h.Length < 0 {
		return 0
	}
	b0 := (h.Rsv&0x7)<<4 | byte(h.OpCode&0x0f)
	if h.Fin {
		b0 |= bitFin
	}
	dst[0] = b0
	var b1 byte
	if h.Masked {
		b1 = bitMask
	}
	i := 2
	switch {
	case h.Length <= len7Max:
		dst[1] = b1 | byte(h.Length)
	case h.Length <= 0xffff:
		dst[1] = b1 | len16Code
		binary.BigEndian.PutUint16(dst[2:4], uint16(h.Length))
		i = 4
	default:
		dst[1] = b1 | len64Code
		binary.BigEndian.PutUint64(dst[2:10], uint64(h.Length))
		i = 10
	}
	if h.Masked {
		copy(dst[i:i+4], h.Mask[:])
	}
	return n
}
