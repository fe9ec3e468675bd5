package protocol

import (
	"testing"
	"unsafe"
)

// A session is one per connection (issue 18's memory budget): a field
// that pushes it into the next size class is noticed here.
func TestSessionSize(t *testing.T) {
	if n := unsafe.Sizeof(session{}); n > 128 {
		t.Errorf("session is %d B, over its 128-byte size class", n)
	}
}
