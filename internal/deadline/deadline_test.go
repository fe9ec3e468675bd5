package deadline

import (
	"context"
	"testing"
	"time"
)

func TestShared(t *testing.T) {
	d := 400 * time.Millisecond
	sd := New(d)
	start := time.Now()
	a := sd.Get()
	b := sd.Get()
	if a != b {
		t.Fatal("two calls within the slack window got different contexts")
	}
	dl, ok := a.Deadline()
	if !ok || dl.Sub(start) < d || dl.Sub(start) > d+sd.slack+50*time.Millisecond {
		t.Fatalf("deadline %v after the call, want within [%v, %v]", dl.Sub(start), d, d+sd.slack)
	}
	// Past the slack window a caller gets a new context that still has d.
	time.Sleep(sd.slack + 10*time.Millisecond)
	c := sd.Get()
	if c == a {
		t.Fatal("a context with less than d left was handed out")
	}
	if dl, _ := c.Deadline(); time.Until(dl) < d-10*time.Millisecond {
		t.Fatalf("new context ends in %v, want at least %v", time.Until(dl), d)
	}
	// Each ends by itself at its deadline.
	select {
	case <-a.Done():
		if a.Err() != context.DeadlineExceeded {
			t.Fatalf("err %v", a.Err())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("shared context never ended")
	}
	if n := testing.AllocsPerRun(1000, func() { _ = sd.Get() }); n != 0 {
		t.Fatalf("get allocates %v times within a window", n)
	}
}
