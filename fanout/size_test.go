package fanout

import (
	"testing"
	"unsafe"
)

// An idle personal channel costs one channel and one Subscription per
// connection (issue 18's memory budget): their size classes are part of
// it, so a field that pushes either into the next class is noticed here.
func TestPerSubscriberStructSizes(t *testing.T) {
	if n := unsafe.Sizeof(channel{}); n > 288 {
		t.Errorf("channel is %d B, over its 288-byte size class", n)
	}
	if n := unsafe.Sizeof(Subscription{}); n > 128 {
		t.Errorf("Subscription is %d B, over its 128-byte size class", n)
	}
}
