package codec

import (
	"testing"

	"github.com/gobwas/ws"
)

// Need must never ask for more bytes than the stream still holds before
// the next chunk: feeding exactly Need bytes at a time always makes
// progress, and the whole stream parses.
func TestNeedNeverOvershoots(t *testing.T) {
	key := [4]byte{9, 8, 7, 6}
	var stream []byte
	for _, n := range []int{0, 1, 5, 125, 126, 300, 65536, 70000} {
		stream = AppendMaskedFrame(stream, ws.OpBinary, true, make([]byte, n), key)
		stream = AppendMaskedFrame(stream, ws.OpPing, true, []byte("p"), key)
	}
	cfg := Config{Role: RoleServer}
	var p Parser
	p.Init(&cfg)
	if got := p.Need(); got != 2 {
		t.Fatalf("Need between frames = %d, want 2", got)
	}
	frames := 0
	for len(stream) > 0 {
		need := p.Need()
		if need < 1 {
			t.Fatalf("Need = %d, want >= 1", need)
		}
		chunk := stream[:min(int(need), len(stream))]
		if int64(len(chunk)) < need {
			t.Fatalf("Need = %d but only %d bytes remain in the stream", need, len(chunk))
		}
		stream = stream[len(chunk):]
		for len(chunk) > 0 {
			c, n, ok, err := p.Next(chunk)
			if err != nil {
				t.Fatal(err)
			}
			chunk = chunk[n:]
			if ok && c.FrameEnd {
				frames++
			}
		}
	}
	if frames != 16 {
		t.Fatalf("parsed %d frames, want 16", frames)
	}
}

func TestNeedClientRole(t *testing.T) {
	cfg := Config{Role: RoleClient}
	var p Parser
	p.Init(&cfg)
	if got := p.Need(); got != 2 {
		t.Fatalf("client Need between frames = %d, want 2", got)
	}
}
