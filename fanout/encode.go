package fanout

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"unicode/utf8"
	"unsafe"

	"github.com/gobwas/ws"

	"github.com/pushd/pushd/codec"
)

// Frame encoding. Every function here builds one complete server frame in
// one allocation of exactly its size: the body length is computed first so
// the header can be written in front without a second buffer.

const hexDigits = "0123456789abcdef"

// jsonStringLen returns the length of s encoded as a JSON string, quotes
// included, as appendJSONString writes it.
func jsonStringLen(s string) int {
	n := 2
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t':
				n += 2
			case c < 0x20:
				n += 6
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			n += 6 // \ufffd
		} else {
			n += size
		}
		i += size
	}
	return n
}

// appendJSONString appends s as a JSON string (RFC 8259 §7). Invalid UTF-8
// becomes \ufffd, as encoding/json does.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				if c < 0x20 {
					dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
				} else {
					dst = append(dst, c)
				}
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}

func uintLen(v uint64) int {
	n := 1
	for v >= 10 {
		v /= 10
		n++
	}
	return n
}

// newFrame allocates a text frame for a body of bodyLen bytes and returns
// it with the header written; the caller appends exactly bodyLen bytes.
func newFrame(op ws.OpCode, bodyLen int) []byte {
	h := ws.Header{Fin: true, OpCode: op, Length: int64(bodyLen)}
	hl := codec.HeaderSize(h)
	b := make([]byte, hl, hl+bodyLen)
	codec.WriteHeader(b, h)
	return b
}

// payloadIsJSON reports whether data can be embedded verbatim as the
// "data" value. Checked once per publication, not per subscriber.
func payloadIsJSON(data []byte) bool { return len(data) > 0 && json.Valid(data) }

// encodeJSONPush builds {"ch":<ch>,"epoch":<epoch>,"seq":N,"data":<data>}
// ("epoch" only when not empty): data verbatim when isJSON, else as a JSON
// string when it is valid UTF-8, else (bytes no JSON string can carry) as
// standard base64 in a string followed by "b64":true, so that nothing is
// replaced by U+FFFD on the way.
func encodeJSONPush(ch, epoch string, seq uint64, data []byte, isJSON bool) []byte {
	n := len(`{"ch":,"seq":,"data":}`) + jsonStringLen(ch) + uintLen(seq)
	if epoch != "" {
		n += len(`,"epoch":`) + jsonStringLen(epoch)
	}
	b64 := !isJSON && !codec.ValidUTF8(data)
	switch {
	case isJSON:
		n += len(data)
	case b64:
		n += 2 + base64.StdEncoding.EncodedLen(len(data)) + len(`,"b64":true`)
	default:
		n += jsonStringLen(bytesString(data))
	}
	b := newFrame(ws.OpText, n)
	b = append(b, `{"ch":`...)
	b = appendJSONString(b, ch)
	if epoch != "" {
		b = append(b, `,"epoch":`...)
		b = appendJSONString(b, epoch)
	}
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"data":`...)
	switch {
	case isJSON:
		b = append(b, data...)
	case b64:
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, data)
		b = append(b, `","b64":true`...)
	default:
		b = appendJSONString(b, bytesString(data))
	}
	return append(b, '}')
}

// encodeRawPush builds the payload alone: text when valid UTF-8, else
// binary.
func encodeRawPush(data []byte) []byte {
	op := ws.OpBinary
	if codec.ValidUTF8(data) {
		op = ws.OpText
	}
	return codec.CompileFrame(op, data)
}

// encodePush builds the frame of pub in format f.
func encodePush(f Format, pub *Publication, isJSON bool) []byte {
	switch f {
	case FormatRaw:
		return encodeRawPush(pub.Data)
	case FormatSSE, FormatNDJSON:
		return encodeStreamPush(f, pub, isJSON)
	}
	return encodeJSONPush(pub.Channel, pub.Epoch, pub.Seq, pub.Data, isJSON)
}

// encodeGap builds {"op":"gap","ch":<ch>,"epoch":<epoch>,"from":A,"to":B}
// ("epoch" only when not empty).
func encodeGap(ch, epoch string, from, to uint64) []byte {
	n := len(`{"op":"gap","ch":,"from":,"to":}`) + jsonStringLen(ch) + uintLen(from) + uintLen(to)
	if epoch != "" {
		n += len(`,"epoch":`) + jsonStringLen(epoch)
	}
	b := newFrame(ws.OpText, n)
	b = append(b, `{"op":"gap","ch":`...)
	b = appendJSONString(b, ch)
	if epoch != "" {
		b = append(b, `,"epoch":`...)
		b = appendJSONString(b, epoch)
	}
	b = append(b, `,"from":`...)
	b = strconv.AppendUint(b, from, 10)
	b = append(b, `,"to":`...)
	b = strconv.AppendUint(b, to, 10)
	return append(b, '}')
}

// AppendJSONString appends s as a JSON string (RFC 8259 §7), replacing
// invalid UTF-8 with U+FFFD. Exported for the protocol's replies.
func AppendJSONString(dst []byte, s string) []byte { return appendJSONString(dst, s) }

// bytesString views b as a string without copying. b is immutable
// publication data, so the view never changes under the reader.
func bytesString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
