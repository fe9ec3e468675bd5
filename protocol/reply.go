package protocol

import (
	"strconv"
	"time"

	"github.com/gobwas/ws"

	"github.com/pushd/pushd/codec"
	"github.com/pushd/pushd/fanout"
)

// Reply frames. Each is built into one small buffer and compiled into one
// frame; replies are per connection and rare next to pushes.

func textFrame(body []byte) []byte { return codec.CompileFrame(ws.OpText, body) }

// subokFrame: {"op":"subok","ch":..,"epoch":"..","seq":N,"recovered":bool}
// (epoch "" when the channel has no stream yet).
func subokFrame(ch string, res fanout.SubscribeResult) []byte {
	b := make([]byte, 0, 96+len(ch))
	b = append(b, `{"op":"subok","ch":`...)
	b = fanout.AppendJSONString(b, ch)
	b = append(b, `,"epoch":`...)
	b = fanout.AppendJSONString(b, res.Epoch)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, res.Seq, 10)
	b = append(b, `,"recovered":`...)
	b = strconv.AppendBool(b, res.Recovered)
	return textFrame(append(b, '}'))
}

// unsubokFrame: {"op":"unsubok","ch":..}.
func unsubokFrame(ch string) []byte {
	b := make([]byte, 0, 32+len(ch))
	b = append(b, `{"op":"unsubok","ch":`...)
	b = fanout.AppendJSONString(b, ch)
	return textFrame(append(b, '}'))
}

// errFrame: {"op":"err","ch":..,"code":N,"reason":".."} ("ch" only when
// known).
func errFrame(e *RequestError) []byte {
	b := make([]byte, 0, 64+len(e.Ch)+len(e.Reason))
	b = append(b, `{"op":"err",`...)
	if e.Ch != "" {
		b = append(b, `"ch":`...)
		b = fanout.AppendJSONString(b, e.Ch)
		b = append(b, ',')
	}
	b = append(b, `"code":`...)
	b = strconv.AppendInt(b, int64(e.Code), 10)
	b = append(b, `,"reason":`...)
	b = fanout.AppendJSONString(b, e.Reason)
	return textFrame(append(b, '}'))
}

// expiringFrame: {"op":"expiring","in_ms":N}, the token expires in N ms.
func expiringFrame(in time.Duration) []byte {
	b := append(make([]byte, 0, 48), `{"op":"expiring","in_ms":`...)
	b = strconv.AppendInt(b, max(in.Milliseconds(), 0), 10)
	return textFrame(append(b, '}'))
}

// refreshokFrame: {"op":"refreshok","exp":<unix seconds>}.
func refreshokFrame(exp time.Time) []byte {
	b := append(make([]byte, 0, 48), `{"op":"refreshok","exp":`...)
	b = strconv.AppendInt(b, exp.Unix(), 10)
	return textFrame(append(b, '}'))
}

// unsubscribedFrame: {"op":"unsubscribed","ch":..,"reason":".."}, a
// subscription the server ended (after its last push).
func unsubscribedFrame(ch, reason string) []byte {
	b := append(make([]byte, 0, 48+len(ch)+len(reason)), `{"op":"unsubscribed","ch":`...)
	b = fanout.AppendJSONString(b, ch)
	b = append(b, `,"reason":`...)
	b = fanout.AppendJSONString(b, reason)
	return textFrame(append(b, '}'))
}

// reconnectFrame: {"op":"reconnect","after_ms":N}, the hint the JS client
// honours after the close that follows.
func reconnectFrame(afterMs int64) []byte {
	b := append(make([]byte, 0, 40), `{"op":"reconnect","after_ms":`...)
	b = strconv.AppendInt(b, afterMs, 10)
	return textFrame(append(b, '}'))
}
