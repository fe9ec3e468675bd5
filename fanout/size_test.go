package fanout

import (
	"testing"
	"unsafe"
)

// An idle personal channel costs one channel and one Subscription per
// connection (issue 18's memory budget): their size classes are part of
// it, so a field that pushes either into the next class is noticed here.
// State that only a channel or subscription in use needs (the mailbox and
// delivery scratch, the window's ring, a held gap notice or conflated
// frame) is allocated on first use, behind channel.dl, channel.win and
// Subscription.hold.
func TestPerSubscriberStructSizes(t *testing.T) {
	if n := unsafe.Sizeof(channel{}); n > 192 {
		t.Errorf("channel is %d B, over its 192-byte size class", n)
	}
	if n := unsafe.Sizeof(Subscription{}); n > 80 {
		t.Errorf("Subscription is %d B, over its 80-byte size class", n)
	}
}
