package protocol

import (
	"testing"
	"time"
	"unsafe"

	"github.com/pushd/pushd/auth"
)

// A session is one per connection (issue 18's memory budget): a field
// that pushes it into the next size class is noticed here.
func TestSessionSize(t *testing.T) {
	if n := unsafe.Sizeof(session{}); n > 128 {
		t.Errorf("session is %d B, over its 128-byte size class", n)
	}
}

// The GCRA bucket allows the burst at once, then MaxMessageRate per
// second; refused messages spend nothing.
func TestMessageBucket(t *testing.T) {
	e := newEnv(t, Config{MaxMessageRate: 20, MaxMessageBurst: 4})
	s := newSession(e.h, &recorder{}, urlRequest{}, auth.Grant{})
	start := time.Now()
	allowed := 0
	for range 10 {
		if s.take() {
			allowed++
		}
	}
	// 4 at once, plus one per 50 ms that passed meanwhile.
	if max := 4 + int(time.Since(start)/(50*time.Millisecond)); allowed < 4 || allowed > max {
		t.Fatalf("burst: %d allowed, want 4..%d", allowed, max)
	}
	time.Sleep(120 * time.Millisecond)
	before := time.Now()
	again := 0
	for s.take() {
		again++
	}
	// 120 ms at 20/s refills 2 (more if the sleep ran long, never more
	// than the burst).
	elapsed := before.Sub(start)
	lo, hi := 2, min(4, int(elapsed/(50*time.Millisecond))+1)
	if again < lo || again > hi {
		t.Fatalf("after %v: %d allowed, want %d..%d", elapsed, again, lo, hi)
	}
}
