package codec

// UTF8 is an incremental UTF-8 validator (RFC 3629, as required for text
// messages by RFC 6455 §8.1): feed it a message in pieces split anywhere,
// including inside a code point. It rejects overlong encodings, surrogates
// (U+D800..U+DFFF) and code points above U+10FFFF; noncharacters such as
// U+FFFE and U+FFFF are valid. Its answers on a whole input equal
// unicode/utf8.Valid.
//
// It fails fast: Write returns false at the first byte that cannot start or
// continue a valid sequence (0xF4 0x90 fails at 0x90, without waiting for the
// rest of the code point). The zero value is ready; one byte of state.
type UTF8 struct {
	s uint8
}

// Validator states: how many continuation bytes are still needed, with the
// special ranges for the second byte after E0, ED, F0 and F4 (RFC 3629 §4).
const (
	u8Accept = iota // between code points
	u8Need1         // 80..BF, then accept
	u8Need2         // 80..BF, then u8Need1
	u8Need3         // 80..BF, then u8Need2
	u8E0            // A0..BF (no overlong 3-byte), then u8Need1
	u8ED            // 80..9F (no surrogates), then u8Need1
	u8F0            // 90..BF (no overlong 4-byte), then u8Need2
	u8F4            // 80..8F (<= U+10FFFF), then u8Need2
	u8Reject
)

// utf8Step advances the validator state s by one byte.
func utf8Step(s uint8, c byte) uint8 {
	switch s {
	case u8Accept:
		switch {
		case c < 0x80:
			return u8Accept
		case c < 0xC2: // continuation byte, or C0/C1 (overlong 2-byte)
			return u8Reject
		case c < 0xE0:
			return u8Need1
		case c == 0xE0:
			return u8E0
		case c == 0xED:
			return u8ED
		case c < 0xF0:
			return u8Need2
		case c == 0xF0:
			return u8F0
		case c < 0xF4:
			return u8Need3
		case c == 0xF4:
			return u8F4
		}
		return u8Reject
	case u8Need1, u8Need2, u8Need3:
		if c&0xC0 == 0x80 {
			return s - 1
		}
	case u8E0:
		if 0xA0 <= c && c <= 0xBF {
			return u8Need1
		}
	case u8ED:
		if 0x80 <= c && c <= 0x9F {
			return u8Need1
		}
	case u8F0:
		if 0x90 <= c && c <= 0xBF {
			return u8Need2
		}
	case u8F4:
		if 0x80 <= c && c <= 0x8F {
			return u8Need2
		}
	}
	return u8Reject
}

// Write validates the next piece of the input. It returns false as soon as
// the input seen so far cannot be a prefix of valid UTF-8; once false, it
// stays false until Reset.
func (u *UTF8) Write(p []byte) bool {
	s := u.s
	if s == u8Reject {
		return false
	}
	// Finish a code point left open by the previous piece.
	for s != u8Accept && len(p) > 0 {
		s = utf8Step(s, p[0])
		p = p[1:]
		if s == u8Reject {
			u.s = u8Reject
			return false
		}
	}
	if s != u8Accept {
		u.s = s
		return true
	}
	// The bulk goes to validUTF8 (AVX2 on amd64, see utf8_amd64.s; else
	// unicode/utf8.Valid); only an incomplete trailing code point, at most
	// 3 bytes, is stepped here so that its state carries over.
	k := incompleteTail(p)
	if !validUTF8(p[:k]) {
		u.s = u8Reject
		return false
	}
	for _, c := range p[k:] {
		s = utf8Step(s, c)
		if s == u8Reject {
			u.s = u8Reject
			return false
		}
	}
	u.s = s
	return true
}

// incompleteTail returns the index of a lead byte in the last 3 bytes of p
// whose sequence runs past the end of p, or len(p) if there is none.
func incompleteTail(p []byte) int {
	for i := len(p) - 1; i >= 0 && i >= len(p)-3; i-- {
		c := p[i]
		if c < 0x80 {
			return len(p)
		}
		if c >= 0xC0 {
			need := 2
			if c >= 0xF0 {
				need = 4
			} else if c >= 0xE0 {
				need = 3
			}
			if len(p)-i < need {
				return i
			}
			return len(p)
		}
	}
	return len(p)
}

// ValidUTF8 reports whether p is entirely valid UTF-8: the same answer as
// unicode/utf8.Valid, much faster on non-ASCII text on amd64 with AVX2
// (BenchmarkUTF8). Use it for whole payloads, e.g. an inflated text message.
func ValidUTF8(p []byte) bool { return validUTF8(p) }

// Complete reports whether no partial code point is pending and nothing
// invalid was seen: the input so far is valid, complete UTF-8.
func (u *UTF8) Complete() bool { return u.s == u8Accept }

// Valid reports whether nothing invalid has been seen so far (a partial code
// point may be pending).
func (u *UTF8) Valid() bool { return u.s != u8Reject }

// Reset forgets all input.
func (u *UTF8) Reset() { u.s = u8Accept }
