package poller

import (
	"slices"

	"github.com/gobwas/ws"

	"github.com/pushd/pushd/codec"
)

// Echo is the conformance Handler: every data message goes back unchanged
// as one frame of the same opcode. It accepts any path and selects the
// subprotocol "pushd.v1" when offered, none otherwise.
type Echo struct{}

// Upgrade implements Handler.
func (Echo) Upgrade(_ *Conn, r *Request) (string, error) {
	if slices.Contains(r.Protocols, "pushd.v1") {
		return "pushd.v1", nil
	}
	return "", nil
}

// Open implements Handler.
func (Echo) Open(*Conn) {}

// Message implements Handler. A client that does not read its echoes is a
// slow consumer once MaxPendingBytes are queued: it is closed with 4001.
func (Echo) Message(c *Conn, op ws.OpCode, data []byte) {
	if err := c.Send(codec.CompileFrame(op, data)); err == ErrQueueFull {
		_ = c.Close(StatusSlowConsumer, "slow consumer")
	}
}

// Close implements Handler.
func (Echo) Close(*Conn, ws.StatusCode) {}
