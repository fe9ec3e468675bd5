package cluster

import (
	"testing"
	"unsafe"
)

// A personal channel through Redis costs one rchan and its two pub/sub
// names (issue 18's memory budget).
func TestPerChannelCosts(t *testing.T) {
	if n := unsafe.Sizeof(rchan{}); n > 96 {
		t.Errorf("rchan is %d B, over its 96-byte size class", n)
	}
	for _, ch := range []string{"", "user:1", "a{b}c", "login:7f3a9c"} {
		raw, durable := pubsubNames(ch)
		if raw != rawName(ch) || durable != durableName(ch) {
			t.Errorf("pubsubNames(%q) = %q, %q; want %q, %q", ch, raw, durable, rawName(ch), durableName(ch))
		}
		if unsafe.StringData(raw) != unsafe.StringData(durable) {
			t.Errorf("pubsubNames(%q): two allocations", ch)
		}
	}
}
