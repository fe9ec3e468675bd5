package poller

import (
	"testing"
	"unsafe"
)

// Every connection is one Conn: its size class is most of an idle ws
// connection's cost (about 0.5 KiB in all), so a field that pushes it
// into the next class is noticed here.
func TestConnSize(t *testing.T) {
	if n := unsafe.Sizeof(Conn{}); n > 288 {
		t.Errorf("Conn is %d B, over its 288-byte size class", n)
	}
}
