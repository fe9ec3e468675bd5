package cluster

import (
	"crypto/rand"
	"encoding/hex"
)

// NewEpoch returns a new random epoch id (fanout.Publication.Epoch): 10
// lower-case hex digits, 40 random bits. An epoch only has to differ from
// the channel's earlier epochs that a client may still hold.
func NewEpoch() string {
	var b [5]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}
