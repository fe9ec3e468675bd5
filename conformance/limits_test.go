package conformance

import (
	"testing"
)

// Small limits for TestConfiguredLimits: the exact boundaries of
// -max-frame and -max-message.
const (
	smallMaxFrame   = 1024
	smallMaxMessage = 4096
)

// TestConfiguredLimits runs pushd with -max-frame 1024 -max-message 4096
// and checks both boundaries: at the limit the message is echoed, one byte
// above it the connection closes with 1009.
func TestConfiguredLimits(t *testing.T) {
	t.Parallel()
	p := startEcho(t, "-max-frame", "1024", "-max-message", "4096")
	// fragments splits p into frames of at most size bytes.
	fragments := func(op byte, p []byte, size int) []rawFrame {
		var fs []rawFrame
		for i := 0; i < len(p); i += size {
			o := opCont
			if i == 0 {
				o = op
			}
			fs = append(fs, frame(o, i+size >= len(p), p[i:min(i+size, len(p))]))
		}
		return fs
	}
	cases := []rawCase{
		{"frame-at-max-frame", func(r *rawConn) {
			r.sendFrames(binFrame(binPayload(smallMaxFrame)))
			r.expectMessage(opBinary, binPayload(smallMaxFrame))
			r.closeOK()
		}},
		{"frame-above-max-frame-1009", func(r *rawConn) {
			r.sendFrames(binFrame(binPayload(smallMaxFrame + 1)))
			r.expectClose(1009)
		}},
		{"text-frame-above-max-frame-1009", func(r *rawConn) {
			r.sendFrames(frame(opText, false, textPayload(smallMaxFrame+1)))
			r.expectClose(1009)
		}},
		{"message-at-max-message", func(r *rawConn) {
			r.sendFrames(fragments(opText, textPayload(smallMaxMessage), smallMaxFrame)...)
			r.expectMessage(opText, textPayload(smallMaxMessage))
			r.closeOK()
		}},
		{"message-above-max-message-1009", func(r *rawConn) {
			r.sendFrames(fragments(opBinary, binPayload(smallMaxMessage+1), smallMaxFrame)...)
			r.expectClose(1009)
		}},
		{"message-above-max-message-fails-before-fin", func(r *rawConn) {
			// The fragment that crosses the limit has FIN=0: pushd must
			// not wait for the end of the message.
			fs := fragments(opBinary, binPayload(smallMaxMessage+smallMaxFrame+1), smallMaxFrame)
			r.sendFrames(fs[:len(fs)-1]...) // 5 KiB, every frame FIN=0
			r.expectClose(1009)
		}},
		{"control-frames-between-fragments-do-not-count", func(r *rawConn) {
			fs := fragments(opText, textPayload(smallMaxMessage), smallMaxFrame)
			var out []rawFrame
			for i, f := range fs {
				out = append(out, f)
				if i < len(fs)-1 {
					out = append(out, ping(binPayload(125)))
				}
			}
			r.sendFrames(out...)
			for range len(fs) - 1 {
				r.expectPong(binPayload(125))
			}
			r.expectMessage(opText, textPayload(smallMaxMessage))
			r.closeOK()
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(dialRaw(t, p.WSAddr))
		})
	}
}
