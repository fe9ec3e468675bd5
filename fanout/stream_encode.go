package fanout

import (
	"strconv"
	"unicode/utf8"
)

// Encodings of the HTTP-stream formats (FormatSSE, FormatNDJSON): like the
// WebSocket ones, each builds one complete, immutable frame in one
// allocation of exactly its size, once per publication and format.

// SSEControlEvent is the SSE event type of pushd's own messages (gap
// notices, replies, the drain's reconnect hint): their data is the same
// JSON object a WebSocket connection gets. Publications use their channel
// as the event type, so a channel of this name cannot be streamed over
// SSE (package protocol refuses it).
const SSEControlEvent = "pushd"

// encodeStreamPush builds pub's frame in FormatSSE or FormatNDJSON.
func encodeStreamPush(f Format, pub *Publication, isJSON bool) []byte {
	if f == FormatSSE {
		return encodeSSEPush(pub)
	}
	n := jsonPushLen(pub.Channel, pub.Epoch, pub.Seq, pub.Data, isJSON) + 1
	b := appendJSONPush(make([]byte, 0, n), pub.Channel, pub.Epoch, pub.Seq, pub.Data, isJSON)
	return append(b, '\n')
}

// jsonPushLen is the length of appendJSONPush's output.
func jsonPushLen(ch, epoch string, seq uint64, data []byte, isJSON bool) int {
	n := len(`{"ch":,"seq":,"data":}`) + jsonStringLen(ch) + uintLen(seq)
	if epoch != "" {
		n += len(`,"epoch":`) + jsonStringLen(epoch)
	}
	if isJSON {
		n += len(data)
	} else {
		n += jsonStringLen(bytesString(data))
	}
	return n
}

// appendJSONPush appends FormatJSON's object without a WebSocket header.
func appendJSONPush(b []byte, ch, epoch string, seq uint64, data []byte, isJSON bool) []byte {
	b = append(b, `{"ch":`...)
	b = appendJSONString(b, ch)
	if epoch != "" {
		b = append(b, `,"epoch":`...)
		b = appendJSONString(b, epoch)
	}
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"data":`...)
	if isJSON {
		b = append(b, data...)
	} else {
		b = appendJSONString(b, bytesString(data))
	}
	return append(b, '}')
}

// encodeSSEPush builds "event: <ch>\nid: <epoch>:<seq>\ndata: ...\n\n".
func encodeSSEPush(pub *Publication) []byte {
	n := len("event: \n") + len(pub.Channel) + sseDataLen(pub.Data) + 1
	if pub.Seq != 0 {
		n += len("id: :\n") + len(pub.Epoch) + uintLen(pub.Seq)
	}
	b := make([]byte, 0, n)
	b = append(b, "event: "...)
	b = append(b, pub.Channel...)
	b = append(b, '\n')
	if pub.Seq != 0 {
		b = append(b, "id: "...)
		b = append(b, pub.Epoch...)
		b = append(b, ':')
		b = strconv.AppendUint(b, pub.Seq, 10)
		b = append(b, '\n')
	}
	b = appendSSEData(b, pub.Data)
	return append(b, '\n')
}

// sseDataLen is the length of appendSSEData's output.
func sseDataLen(data []byte) int {
	n := len("data: \n")
	for i := 0; i < len(data); {
		c := data[i]
		switch {
		case c == '\r' && i+1 < len(data) && data[i+1] == '\n':
			n += len("\ndata: ")
			i += 2
			continue
		case c == '\r' || c == '\n':
			n += len("\ndata: ")
		case c < utf8.RuneSelf:
			n++
		default:
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size == 1 {
				n += utf8.RuneLen(utf8.RuneError)
			} else {
				n += size
			}
			i += size
			continue
		}
		i++
	}
	return n
}

// appendSSEData appends data as "data:" lines: one per line of data (a
// line ends at "\r\n", "\r" or "\n", as the SSE parser splits them),
// invalid UTF-8 replaced by U+FFFD (EventSource decodes UTF-8 and would
// do the same).
func appendSSEData(b, data []byte) []byte {
	b = append(b, "data: "...)
	for i := 0; i < len(data); {
		c := data[i]
		switch {
		case c == '\r' && i+1 < len(data) && data[i+1] == '\n':
			b = append(b, "\ndata: "...)
			i += 2
			continue
		case c == '\r' || c == '\n':
			b = append(b, "\ndata: "...)
		case c < utf8.RuneSelf:
			b = append(b, c)
		default:
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size == 1 {
				b = utf8.AppendRune(b, utf8.RuneError)
			} else {
				b = append(b, data[i:i+size]...)
			}
			i += size
			continue
		}
		i++
	}
	return append(b, '\n')
}

// EncodeStreamControl frames body, a JSON object of pushd's own (a reply,
// a notice), for a FormatSSE or FormatNDJSON stream: an "event: pushd"
// event, or body and "\n". Other formats get nil.
func EncodeStreamControl(f Format, body []byte) []byte {
	switch f {
	case FormatSSE:
		b := make([]byte, 0, len("event: \n")+len(SSEControlEvent)+sseDataLen(body)+1)
		b = append(b, "event: "+SSEControlEvent+"\n"...)
		b = appendSSEData(b, body)
		return append(b, '\n')
	case FormatNDJSON:
		b := make([]byte, 0, len(body)+1)
		return append(append(b, body...), '\n')
	}
	return nil
}

// encodeGapFor builds the gap notice in a subscriber's format.
func encodeGapFor(f Format, ch, epoch string, from, to uint64) []byte {
	fr := encodeGap(ch, epoch, from, to)
	if f != FormatSSE && f != FormatNDJSON {
		return fr
	}
	return EncodeStreamControl(f, wsPayload(fr))
}

// wsPayload returns the payload of an unmasked server frame built here.
func wsPayload(fr []byte) []byte {
	switch n := fr[1] & 0x7f; n {
	case 126:
		return fr[4:]
	case 127:
		return fr[10:]
	default:
		return fr[2:]
	}
}
