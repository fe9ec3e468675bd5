package codec

// Need returns how many more input bytes the parser needs before Next can
// make progress on what it is in the middle of (RFC 6455 §5.2): the rest of
// the current frame's payload, or the rest of a partial header (plus the
// payload when the second byte already gives a 7-bit length, so a small
// frame is asked for whole), or, between frames, 2: the first two header
// bytes say how long the header is, and an invalid frame (say, unmasked
// from a client) may be only 2 bytes long, so asking for more between
// frames could leave a protocol error unnoticed.
//
// A poller uses it as the socket's receive low-water mark (SO_RCVLOWAT), so
// a client that trickles a frame one byte at a time wakes the server once
// per header and once per payload instead of once per byte.
func (p *Parser) Need() int64 {
	if p.flags&flagInFrame != 0 {
		return max(p.left, 1)
	}
	switch p.hn {
	case 0:
		return 2
	case 1:
		return 1
	default:
		rest := int64(headerSize(p.hbuf[1]) - int(p.hn))
		if l := int64(p.hbuf[1] & 0x7f); l <= len7Max {
			// The length is already known: ask for the whole frame at once.
			rest += l
		}
		return max(rest, 1)
	}
}
