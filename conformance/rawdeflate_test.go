package conformance

import (
	"bytes"
	"compress/flate"
	"fmt"
	"strings"
	"testing"
)

// Autobahn|Testsuite groups 12 and 13 style cases (permessage-deflate,
// RFC 7692) for the raw-frame client. The client compresses with the
// standard library's compress/flate, independent of pushd's klauspost
// inflater; pushd in -echo mode answers uncompressed, which RFC 7692 allows
// (RSV1 clear: an uncompressed message), so the echo shows what pushd
// inflated.

// deflateRaw compresses p as one permessage-deflate message with a window
// of 2^bits bytes where compress/flate allows choosing (it always uses 15
// bits; a smaller client_max_window_bits only promises the server a
// smaller window, and 15-bit data within a 15-bit inflater is what pushd
// must handle anyway), flushed, the trailing 00 00 ff ff removed (§7.2.1).
func deflateRaw(t testing.TB, p []byte, level int) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := flate.NewWriter(&b, level)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(p)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	z := b.Bytes()
	if !bytes.HasSuffix(z, []byte{0, 0, 0xff, 0xff}) {
		t.Fatalf("flate flush does not end with 00 00 ff ff")
	}
	return z[:len(z)-4]
}

// compressedMessage splits the compressed payload z into frames of at most
// frag bytes (0: one frame), RSV1 on the first frame only (§6.1).
func compressedMessage(op byte, z []byte, frag int) []rawFrame {
	if frag <= 0 {
		frag = max(len(z), 1)
	}
	var fs []rawFrame
	for first := true; first || len(z) > 0; first = false {
		n := min(frag, len(z))
		f := frame(opCont, n == len(z), z[:n])
		if first {
			f.op, f.rsv = op, 4
		}
		fs = append(fs, f)
		z = z[n:]
	}
	return fs
}

// dialDeflateRaw connects offering offer and requires pushd to accept
// permessage-deflate with both no_context_takeover parameters.
func dialDeflateRaw(t *testing.T, addr, offer string) *rawConn {
	t.Helper()
	r, ext := dialRawOffer(t, addr, offer)
	for _, want := range []string{"permessage-deflate", "server_no_context_takeover", "client_no_context_takeover"} {
		if !strings.Contains(ext, want) {
			t.Fatalf("offer %q: answered %q, want %s", offer, ext, want)
		}
	}
	return r
}

// TestRawDeflate runs the group 12 (payloads) and 13 (parameters) style
// cases and the permessage-deflate violations against one pushd -echo.
func TestRawDeflate(t *testing.T) {
	t.Parallel()
	p := startEcho(t)
	addr := p.WSAddr

	// 12: text and binary payloads from 16 B to 128 KiB, compressed at
	// levels 1 and 9, as one frame and fragmented into 1 KiB frames, ten
	// messages per connection (each compressed on its own: the client
	// was told client_no_context_takeover).
	t.Run("12-payloads", func(t *testing.T) {
		t.Parallel()
		for _, n := range []int{16, 64, 256, 1024, 4096, 8192, 16384, 65536, 131072} {
			for _, kind := range []string{"text", "binary"} {
				for _, frag := range []int{0, 1024} {
					t.Run(fmt.Sprintf("12-%s-%d-frag%d", kind, n, frag), func(t *testing.T) {
						t.Parallel()
						r := dialDeflateRaw(t, addr, "permessage-deflate; client_max_window_bits")
						op, payload := opText, textPayload(n)
						if kind == "binary" {
							op, payload = opBinary, binPayload(n)
						}
						for i := range 10 {
							level := []int{1, 9}[i%2]
							r.sendFrames(compressedMessage(op, deflateRaw(t, payload, level), frag)...)
							r.expectMessage(op, payload)
						}
						r.closeOK()
					})
				}
			}
		}
	})

	// 13: parameter offers. Each accepted one then carries compressed
	// messages; the declined one gets no extension and RSV1 fails it.
	t.Run("13-parameters", func(t *testing.T) {
		t.Parallel()
		for i, offer := range []string{
			"permessage-deflate",
			"permessage-deflate; client_no_context_takeover",
			"permessage-deflate; server_no_context_takeover",
			"permessage-deflate; client_no_context_takeover; server_no_context_takeover",
			"permessage-deflate; client_max_window_bits",
			"permessage-deflate; client_max_window_bits=9",
			"permessage-deflate; client_max_window_bits=15",
			"permessage-deflate; server_max_window_bits=15",
			"permessage-deflate; server_max_window_bits=9, permessage-deflate",
			"permessage-deflate; client_max_window_bits=9; server_no_context_takeover; client_no_context_takeover",
			"x-unknown-extension, permessage-deflate",
		} {
			t.Run(fmt.Sprintf("13.%d", i+1), func(t *testing.T) {
				t.Parallel()
				r := dialDeflateRaw(t, addr, offer)
				for _, n := range []int{64, 4096, 65536} {
					payload := textPayload(n)
					r.sendFrames(compressedMessage(opText, deflateRaw(t, payload, 6), 0)...)
					r.expectMessage(opText, payload)
				}
				r.closeOK()
			})
		}
		for _, offer := range []string{"permessage-deflate; server_max_window_bits=9", "permessage-deflate; unknown_param", "permessage-deflate; client_max_window_bits=7"} {
			t.Run("declined/"+offer, func(t *testing.T) {
				t.Parallel()
				r, ext := dialRawOffer(t, addr, offer)
				if ext != "" {
					t.Fatalf("offer %q: answered %q, want it declined", offer, ext)
				}
				r.sendFrames(compressedMessage(opText, deflateRaw(t, []byte("hello"), 6), 0)...)
				r.expectClose(1002)
			})
		}
	})

	t.Run("deflate-violations", func(t *testing.T) {
		t.Parallel()
		for _, c := range []struct {
			name   string
			frames func(t *testing.T) []rawFrame
			want   uint16
		}{
			{"rsv1-on-continuation", func(t *testing.T) []rawFrame {
				fs := compressedMessage(opText, deflateRaw(t, textPayload(4096), 6), 8)
				fs[1].rsv = 4
				return fs
			}, 1002},
			{"rsv1-on-ping", func(*testing.T) []rawFrame { f := ping([]byte("p")); f.rsv = 4; return []rawFrame{f} }, 1002},
			{"rsv2", func(t *testing.T) []rawFrame {
				fs := compressedMessage(opText, deflateRaw(t, []byte("hello"), 6), 0)
				fs[0].rsv = 6
				return fs
			}, 1002},
			{"not-deflate-data", func(*testing.T) []rawFrame {
				return compressedMessage(opBinary, []byte{0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa}, 0)
			}, 1007},
			{"compressed-invalid-utf8", func(t *testing.T) []rawFrame {
				return compressedMessage(opText, deflateRaw(t, []byte("ok \xff\xfe not utf-8"), 6), 0)
			}, 1007},
			{"inflates-past-max-message", func(t *testing.T) []rawFrame {
				return compressedMessage(opBinary, deflateRaw(t, make([]byte, maxSize+1), 9), 4096)
			}, 1009},
		} {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				r := dialDeflateRaw(t, addr, "permessage-deflate")
				r.sendFrames(c.frames(t)...)
				r.expectClose(c.want)
			})
		}
		t.Run("empty-compressed-message", func(t *testing.T) {
			t.Parallel()
			r := dialDeflateRaw(t, addr, "permessage-deflate")
			// §7.2.3.6: an empty message compresses to a single 0x00.
			r.sendFrames(compressedMessage(opText, []byte{0x00}, 0)...)
			r.expectMessage(opText, []byte{})
			r.sendFrames(compressedMessage(opBinary, nil, 0)...)
			r.expectMessage(opBinary, []byte{})
			r.closeOK()
		})
		t.Run("uncompressed-on-deflate-connection", func(t *testing.T) {
			t.Parallel()
			r := dialDeflateRaw(t, addr, "permessage-deflate")
			r.sendFrames(text("plain"), binFrame(binPayload(300)))
			r.expectMessage(opText, []byte("plain"))
			r.expectMessage(opBinary, binPayload(300))
			r.closeOK()
		})
		t.Run("ping-between-compressed-fragments", func(t *testing.T) {
			t.Parallel()
			r := dialDeflateRaw(t, addr, "permessage-deflate")
			payload := textPayload(8192)
			fs := compressedMessage(opText, deflateRaw(t, payload, 6), 8)
			if len(fs) < 2 {
				t.Fatalf("compressed message in %d frames, want several", len(fs))
			}
			fs = append(fs[:1], append([]rawFrame{ping([]byte("mid"))}, fs[1:]...)...)
			r.sendFrames(fs...)
			r.expectPong([]byte("mid"))
			r.expectMessage(opText, payload)
			r.closeOK()
		})
	})
}
