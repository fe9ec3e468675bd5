package codec

import (
	"encoding/binary"

	"github.com/gobwas/ws"
)

// MaxCloseReason is the longest close reason that fits a control frame:
// 125 bytes of payload minus the 2-byte code (RFC 6455 §5.5, §5.5.1).
const MaxCloseReason = ws.MaxControlFramePayloadSize - 2

// ValidCloseCode reports whether code may appear in a close frame on the
// wire (RFC 6455 §7.4.1, §7.4.2; IANA "WebSocket Close Code Number
// Registry"): 1000-1003 and 1007-1014 (registered), 3000-4999 (libraries,
// frameworks, applications). 1004-1006 and 1015 are reserved and never sent;
// below 1000, 1016-2999 and 5000 and above are invalid.
func ValidCloseCode(code ws.StatusCode) bool {
	switch {
	case code >= 1000 && code <= 1003:
		return true
	case code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// ParseClose parses a close frame payload (RFC 6455 §5.5.1). An empty
// payload yields 1005 (no status received) and no error. One byte fails with
// ErrCloseTooShort, a payload above 125 bytes with ErrControlTooBig, a code
// that ValidCloseCode rejects with ErrCloseCode and a reason that is not
// valid UTF-8 with ErrCloseReasonUTF8. reason is a sub-slice of p, not
// copied.
func ParseClose(p []byte) (code ws.StatusCode, reason []byte, err error) {
	switch {
	case len(p) == 0:
		return ws.StatusNoStatusRcvd, nil, nil
	case len(p) == 1:
		return 0, nil, ErrCloseTooShort
	case len(p) > ws.MaxControlFramePayloadSize:
		return 0, nil, ErrControlTooBig
	}
	code = ws.StatusCode(binary.BigEndian.Uint16(p))
	if !ValidCloseCode(code) {
		return code, nil, ErrCloseCode
	}
	reason = p[2:]
	if !validUTF8(reason) {
		return code, nil, ErrCloseReasonUTF8
	}
	return code, reason, nil
}

// AppendClosePayload appends a close payload (RFC 6455 §5.5.1): code, then
// reason truncated to MaxCloseReason bytes on a UTF-8 boundary. Code 0 or
// 1005 (no status) appends nothing: such a close frame has no payload.
func AppendClosePayload(dst []byte, code ws.StatusCode, reason string) []byte {
	if code == 0 || code == ws.StatusNoStatusRcvd {
		return dst
	}
	reason = truncateUTF8(reason, MaxCloseReason)
	dst = binary.BigEndian.AppendUint16(dst, uint16(code))
	return append(dst, reason...)
}

// AppendClose appends a whole close frame (server side, unmasked, FIN) with
// the payload built by AppendClosePayload. The code is not checked: sending a
// valid one (ValidCloseCode) is the caller's job.
func AppendClose(dst []byte, code ws.StatusCode, reason string) []byte {
	n := 0
	if code != 0 && code != ws.StatusNoStatusRcvd {
		n = 2 + len(truncateUTF8(reason, MaxCloseReason))
	}
	dst = append(dst, bitFin|byte(ws.OpClose), byte(n))
	return AppendClosePayload(dst, code, reason)
}

// truncateUTF8 cuts s to at most max bytes without splitting a code point
// (an invalid s is cut at a byte that is not a continuation byte).
func truncateUTF8(s string, max int) string {
	if len(s) <= max {
		return s
	}
	i := max
	for i > 0 && s[i]&0xC0 == 0x80 {
		i--
	}
	return s[:i]
}
