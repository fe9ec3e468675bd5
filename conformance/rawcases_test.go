package conformance

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// rawCase is one conversation of the raw-frame client with pushd, named
// after the Autobahn|Testsuite case it follows where there is one.
type rawCase struct {
	name string
	run  func(r *rawConn)
}

// TestRawFrames drives pushd with hand-written frames through the case
// groups of the Autobahn|Testsuite (1-7, 9, 10) plus pushd's own limits.
// Every case runs on its own connection, all against one pushd process.
func TestRawFrames(t *testing.T) {
	t.Parallel()
	p := startEcho(t)
	runRawGroups(t, p.WSAddr, nil)
}

// rawGroup is one Autobahn case group.
type rawGroup struct {
	name  string
	cases []rawCase
}

func rawGroups() []rawGroup {
	return []rawGroup{
		{"1-framing", framingCases()},
		{"2-pings", pingCases()},
		{"3-rsv", rsvCases()},
		{"4-opcodes", opcodeCases()},
		{"5-fragmentation", fragmentationCases()},
		{"6-utf8", utf8Cases()},
		{"7-close", closeCases()},
		{"9-limits", limitCases()},
		{"10-misc", miscCases()},
		{"violations", violationCases()},
	}
}

// runRawGroups runs every raw case except those in exclude (group/case
// names) against the server at addr, each on its own connection.
func runRawGroups(t *testing.T, addr string, exclude map[string]string) {
	for _, g := range rawGroups() {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			for _, c := range g.cases {
				if _, ok := exclude[g.name+"/"+c.name]; ok {
					continue
				}
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					c.run(dialRaw(t, addr))
				})
			}
		})
	}
}

// echoCase sends payload as one op frame (or in chops of the wire bytes)
// and requires the echo and a clean close.
func echoCase(name string, op byte, payload []byte, chop int) rawCase {
	return rawCase{name, func(r *rawConn) {
		b := wire(frame(op, true, payload))
		if chop > 0 {
			r.sendChopped(b, chop, 0)
		} else {
			r.send(b)
		}
		r.expectMessage(op, payload)
		r.closeOK()
	}}
}

// 1.1 / 1.2: the 7-bit, 16-bit and 64-bit payload length encodings.
func framingCases() []rawCase {
	var cs []rawCase
	for _, n := range []int{0, 125, 126, 127, 128, 65535, 65536} {
		cs = append(cs,
			echoCase(fmt.Sprintf("1.1-text-%d", n), opText, textPayload(n), 0),
			echoCase(fmt.Sprintf("1.2-binary-%d", n), opBinary, binPayload(n), 0))
	}
	return append(cs,
		echoCase("1.1.8-text-65536-chop-997", opText, textPayload(65536), 997),
		echoCase("1.2.8-binary-65536-chop-997", opBinary, binPayload(65536), 997),
		// Several messages in one TCP write and one message per write.
		rawCase{"1.x-pipelined-messages", func(r *rawConn) {
			var fs []rawFrame
			for i := range 20 {
				fs = append(fs, textB(textPayload(i*7)), binFrame(binPayload(i*13)))
			}
			r.sendFrames(fs...)
			for _, f := range fs {
				r.expectMessage(f.op, f.payload)
			}
			r.closeOK()
		}},
	)
}

// 2: pings and pongs.
func pingCases() []rawCase {
	simple := func(name string, p []byte) rawCase {
		return rawCase{name, func(r *rawConn) {
			r.sendFrames(ping(p))
			r.expectPong(p)
			r.closeOK()
		}}
	}
	bin := []byte{0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff}
	return []rawCase{
		simple("2.1-empty", nil),
		simple("2.2-text", []byte("Hello, world!")),
		simple("2.3-binary", bin),
		simple("2.4-125-bytes", binPayload(125)),
		{"2.5-126-bytes-fails", func(r *rawConn) {
			r.sendFrames(ping(binPayload(126)))
			r.expectClose(1002)
		}},
		{"2.6-125-bytes-octet-chops", func(r *rawConn) {
			r.sendChopped(wire(ping(binPayload(125))), 1, time.Millisecond)
			r.expectPong(binPayload(125))
			r.closeOK()
		}},
		{"2.7-unsolicited-pong-empty", func(r *rawConn) {
			r.sendFrames(pong(nil), text("after pong"))
			r.expectMessage(opText, []byte("after pong"))
			r.closeOK()
		}},
		{"2.8-unsolicited-pong-payload", func(r *rawConn) {
			r.sendFrames(pong([]byte("unsolicited pong payload")), text("after pong"))
			r.expectMessage(opText, []byte("after pong"))
			r.closeOK()
		}},
		{"2.9-unsolicited-pong-then-ping", func(r *rawConn) {
			r.sendFrames(pong([]byte("unsolicited pong payload")), ping([]byte("ping payload")))
			r.expectPong([]byte("ping payload"))
			r.closeOK()
		}},
		{"2.10-ten-pings", func(r *rawConn) {
			var fs []rawFrame
			for i := range 10 {
				fs = append(fs, ping(fmt.Appendf(nil, "payload-%d", i)))
			}
			r.sendFrames(fs...)
			for _, f := range fs {
				r.expectPong(f.payload)
			}
			r.closeOK()
		}},
		{"2.11-ten-pings-chopped", func(r *rawConn) {
			for i := range 10 {
				r.sendChopped(wire(ping(fmt.Appendf(nil, "payload-%d", i))), 1, time.Millisecond)
			}
			for i := range 10 {
				r.expectPong(fmt.Appendf(nil, "payload-%d", i))
			}
			r.closeOK()
		}},
	}
}

// 3: reserved bits without a negotiated extension fail with 1002, after a
// valid message has been echoed.
func rsvCases() []rawCase {
	var cs []rawCase
	kinds := []struct {
		name string
		f    rawFrame
	}{
		{"text", text("Hello, world!")},
		{"binary", binFrame(binPayload(10))},
		{"ping", ping([]byte("ping"))},
		{"pong", pong([]byte("pong"))},
		{"close", closeFrame(1000, "")},
		{"continuation", cont(true, []byte("cont"))},
	}
	for _, k := range kinds {
		for rsv := byte(1); rsv <= 7; rsv++ {
			cs = append(cs, rawCase{fmt.Sprintf("3-rsv%d-%s", rsv, k.name), func(r *rawConn) {
				r.sendFrames(text("valid first"))
				r.expectMessage(opText, []byte("valid first"))
				f := k.f
				f.rsv = rsv
				r.sendFrames(f)
				r.expectClose(1002)
			}})
		}
	}
	// 3.2 strict: the valid message, the bad frame and a ping in one write.
	// The echo must go out before the failure, and the ping is never
	// answered.
	return append(cs, rawCase{"3.2-strict-one-write", func(r *rawConn) {
		bad := text("bad")
		bad.rsv = 2
		r.sendFrames(text("Hello"), bad, ping([]byte("never answered")))
		r.expectMessage(opText, []byte("Hello"))
		r.expectClose(1002)
	}})
}

// 4: reserved opcodes 3-7 and 11-15 fail with 1002.
func opcodeCases() []rawCase {
	var cs []rawCase
	for _, op := range []byte{3, 4, 5, 6, 7, 11, 12, 13, 14, 15} {
		cs = append(cs,
			rawCase{fmt.Sprintf("4-op%d-empty", op), func(r *rawConn) {
				r.sendFrames(frame(op, true, nil))
				r.expectClose(1002)
			}},
			rawCase{fmt.Sprintf("4-op%d-payload-after-message", op), func(r *rawConn) {
				r.sendFrames(text("valid first"))
				r.expectMessage(opText, []byte("valid first"))
				r.sendFrames(frame(op, true, []byte("reserved opcode payload")), ping([]byte("never answered")))
				r.expectClose(1002)
			}})
	}
	return cs
}

// 5: fragmentation.
func fragmentationCases() []rawCase {
	frags := []rawFrame{frame(opText, false, []byte("fragment1")), cont(true, []byte("fragment2"))}
	whole := []byte("fragment1fragment2")
	withPing := []rawFrame{frags[0], ping([]byte("ping payload")), frags[1]}
	fail := func(name string, fs ...rawFrame) rawCase {
		return rawCase{name, func(r *rawConn) {
			r.sendFrames(fs...)
			r.expectClose(1002)
		}}
	}
	return []rawCase{
		fail("5.1-fragmented-ping", frame(opPing, false, []byte("fragment1")), cont(true, []byte("fragment2"))),
		fail("5.2-fragmented-pong", frame(opPong, false, []byte("fragment1")), cont(true, []byte("fragment2"))),
		{"5.3-text-2-fragments", func(r *rawConn) {
			r.sendFrames(frags...)
			r.expectMessage(opText, whole)
			r.closeOK()
		}},
		{"5.4-text-2-fragments-frame-wise", func(r *rawConn) {
			r.sendFrames(frags[0])
			r.expectNothing(100 * time.Millisecond)
			r.sendFrames(frags[1])
			r.expectMessage(opText, whole)
			r.closeOK()
		}},
		{"5.5-text-2-fragments-octet-wise", func(r *rawConn) {
			r.sendChopped(wire(frags...), 1, time.Millisecond)
			r.expectMessage(opText, whole)
			r.closeOK()
		}},
		{"5.6-ping-between-fragments", func(r *rawConn) {
			r.sendFrames(withPing...)
			r.expectPong([]byte("ping payload"))
			r.expectMessage(opText, whole)
			r.closeOK()
		}},
		{"5.7-ping-between-fragments-frame-wise", func(r *rawConn) {
			r.sendFrames(withPing[0])
			r.sendFrames(withPing[1])
			r.expectPong([]byte("ping payload"))
			r.sendFrames(withPing[2])
			r.expectMessage(opText, whole)
			r.closeOK()
		}},
		{"5.8-ping-between-fragments-octet-wise", func(r *rawConn) {
			r.sendChopped(wire(withPing...), 1, time.Millisecond)
			r.expectPong([]byte("ping payload"))
			r.expectMessage(opText, whole)
			r.closeOK()
		}},
		fail("5.9-continuation-fin1-no-start", cont(true, []byte("non-continuation payload")), textB(whole)),
		{"5.10-continuation-fin1-no-start-frame-wise", func(r *rawConn) {
			r.sendFrames(cont(true, []byte("non-continuation payload")))
			r.sendFrames(text("never echoed"))
			r.expectClose(1002)
		}},
		{"5.11-continuation-fin1-no-start-octet-wise", func(r *rawConn) {
			r.sendChopped(wire(cont(true, []byte("non-continuation payload")), text("never echoed")), 1, time.Millisecond)
			r.expectClose(1002)
		}},
		fail("5.12-continuation-fin0-no-start", cont(false, []byte("non-continuation payload")), textB(whole)),
		{"5.15-continuation-after-complete-message", func(r *rawConn) {
			r.sendFrames(frame(opText, false, []byte("fragment1")), cont(true, []byte("fragment2")),
				cont(false, []byte("fragment3")), text("fragment4"))
			r.expectMessage(opText, whole)
			r.expectClose(1002)
		}},
		fail("5.17-continuation-fin1-then-text-fragments", cont(true, []byte("fragment1")),
			frame(opText, false, []byte("fragment2")), cont(true, []byte("fragment3"))),
		fail("5.18-text-inside-fragmented-text", frame(opText, false, []byte("fragment1")), text("fragment2")),
		fail("5.18b-binary-inside-fragmented-text", frame(opText, false, []byte("fragment1")), binFrame([]byte("fragment2"))),
		fail("5.18c-text-fin0-inside-fragmented-binary", frame(opBinary, false, []byte("fragment1")), frame(opText, false, []byte("fragment2"))),
		{"5.19-pings-while-fragments-trickle", func(r *rawConn) {
			for i := 1; i <= 5; i++ {
				r.sendFrames(frame(map[bool]byte{true: opText, false: opCont}[i == 1], i == 5, fmt.Appendf(nil, "fragment%d", i)))
				if i == 2 || i == 4 {
					r.sendFrames(ping(fmt.Appendf(nil, "pongme %d!", i)))
					r.expectPong(fmt.Appendf(nil, "pongme %d!", i))
				}
				time.Sleep(50 * time.Millisecond)
			}
			r.expectMessage(opText, []byte("fragment1fragment2fragment3fragment4fragment5"))
			r.closeOK()
		}},
		{"5.x-fragmented-binary-many", func(r *rawConn) {
			p := binPayload(10000)
			var fs []rawFrame
			for i := 0; i < len(p); i += 1000 {
				op := opCont
				if i == 0 {
					op = opBinary
				}
				fs = append(fs, frame(op, i+1000 >= len(p), p[i:i+1000]))
			}
			r.sendFrames(fs...)
			r.expectMessage(opBinary, p)
			r.closeOK()
		}},
	}
}

// 7: close handling.
func closeCases() []rawCase {
	cs := []rawCase{
		{"7.1.1-message-then-close", func(r *rawConn) {
			r.sendFrames(text("Hello World!"))
			r.expectMessage(opText, []byte("Hello World!"))
			r.closeOK()
		}},
		{"7.1.2-two-closes", func(r *rawConn) {
			r.sendFrames(closeFrame(1000, ""), closeFrame(1000, ""))
			r.expectCloseNoReply(1000)
		}},
		{"7.1.3-ping-after-close", func(r *rawConn) {
			r.sendFrames(closeFrame(1000, ""), ping([]byte("never answered")))
			r.expectCloseNoReply(1000)
		}},
		{"7.1.4-text-after-close", func(r *rawConn) {
			r.sendFrames(closeFrame(1000, ""), text("never echoed"))
			r.expectCloseNoReply(1000)
		}},
		{"7.1.5-fragment-close-continuation", func(r *rawConn) {
			r.sendFrames(frame(opText, false, []byte("fragment1")), closeFrame(1000, ""), cont(true, []byte("fragment2")))
			r.expectCloseNoReply(1000)
		}},
		{"7.1.6-256KiB-message-close-ping", func(r *rawConn) {
			p := textPayload(256 << 10)
			r.sendFrames(textB(p), closeFrame(1000, ""), ping([]byte("never answered")))
			// The echo was queued before the close was read: it must come
			// first (Autobahn accepts its absence; pushd's echo queue
			// keeps order, so we require it).
			r.expectMessage(opText, p)
			r.expectCloseNoReply(1000)
		}},
		{"7.3.1-empty-close-payload", func(r *rawConn) {
			r.sendFrames(frame(opClose, true, nil))
			r.expectCloseNoReply(1000)
		}},
		{"7.3.2-one-byte-close-payload-fails", func(r *rawConn) {
			r.sendFrames(frame(opClose, true, []byte{0x03}))
			r.expectClose(1002)
		}},
		{"7.3.3-code-only", func(r *rawConn) {
			r.sendFrames(closeFrame(1000, ""))
			r.expectCloseNoReply(1000)
		}},
		{"7.3.4-code-and-reason", func(r *rawConn) {
			r.sendFrames(closeFrame(1000, "Hello World!"))
			r.expectCloseNoReply(1000)
		}},
		{"7.3.5-123-byte-reason", func(r *rawConn) {
			r.sendFrames(closeFrame(1000, strings.Repeat("*", 123)))
			r.expectCloseNoReply(1000)
		}},
		{"7.3.6-124-byte-reason-fails", func(r *rawConn) {
			r.sendFrames(closeFrame(1000, strings.Repeat("*", 124)))
			r.expectClose(1002)
		}},
		{"7.5.1-invalid-utf8-reason-fails", func(r *rawConn) {
			r.sendFrames(closeFrame(1000, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64"))
			r.expectClose(1007)
		}},
		{"7.5.x-truncated-utf8-reason-fails", func(r *rawConn) {
			r.sendFrames(closeFrame(1000, "ok\xe2\x82"))
			r.expectClose(1007)
		}},
	}
	for _, code := range validCloseCodes {
		cs = append(cs, rawCase{fmt.Sprintf("7.7-valid-code-%d", code), func(r *rawConn) {
			r.sendFrames(closeFrame(uint16(code), "reason é"))
			r.expectCloseNoReply(uint16(code))
		}})
	}
	for _, code := range []int{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		cs = append(cs, rawCase{fmt.Sprintf("7.9-invalid-code-%d-fails", code), func(r *rawConn) {
			r.sendFrames(closeFrame(uint16(code), ""))
			r.expectClose(1002)
		}})
	}
	return cs
}

// 9: limits and performance (a representative subset; each case's cost
// stays below a second on loopback).
func limitCases() []rawCase {
	var cs []rawCase
	for _, n := range []int{64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20} {
		cs = append(cs, echoCase(fmt.Sprintf("9.1-text-%dKiB", n>>10), opText, textPayload(n), 0))
	}
	for _, n := range []int{64 << 10, 1 << 20, 16 << 20} {
		cs = append(cs, echoCase(fmt.Sprintf("9.2-binary-%dKiB", n>>10), opBinary, binPayload(n), 0))
	}
	fragmented := func(name string, op byte, p []byte, size int) rawCase {
		return rawCase{name, func(r *rawConn) {
			var b []byte
			for i := 0; i < len(p); i += size {
				o := opCont
				if i == 0 {
					o = op
				}
				b = frame(o, i+size >= len(p), p[i:min(i+size, len(p))]).encode(b)
			}
			r.sendAsync(b)
			r.expectMessage(op, p)
			r.closeOK()
		}}
	}
	for _, size := range []int{64, 4 << 10, 64 << 10, 1 << 20, 4 << 20} {
		cs = append(cs,
			fragmented(fmt.Sprintf("9.3-text-4MiB-fragments-%dB", size), opText, textPayload(4<<20), size),
			fragmented(fmt.Sprintf("9.4-binary-4MiB-fragments-%dB", size), opBinary, binPayload(4<<20), size))
	}
	for _, chop := range []int{64, 4 << 10, 128 << 10} {
		cs = append(cs,
			echoCase(fmt.Sprintf("9.5-text-1MiB-chops-%dB", chop), opText, textPayload(1<<20), chop),
			echoCase(fmt.Sprintf("9.6-binary-1MiB-chops-%dB", chop), opBinary, binPayload(1<<20), chop))
	}
	return append(cs,
		rawCase{"9.7-1000-text-round-trips", func(r *rawConn) {
			p := textPayload(16)
			start := time.Now()
			for range 1000 {
				r.sendFrames(textB(p))
				r.expectMessage(opText, p)
			}
			r.t.Logf("1000 round trips in %v", time.Since(start))
			r.closeOK()
		}},
		rawCase{"9.8-1000-binary-pipelined", func(r *rawConn) {
			p := binPayload(16)
			var b []byte
			for range 1000 {
				b = binFrame(p).encode(b)
			}
			r.sendAsync(b)
			for range 1000 {
				r.expectMessage(opBinary, p)
			}
			r.closeOK()
		}},
	)
}

// 10: a 64 KiB message in 1300-byte frames.
func miscCases() []rawCase {
	return []rawCase{{"10.1-64KiB-in-1300-byte-frames", func(r *rawConn) {
		p := textPayload(64 << 10)
		var fs []rawFrame
		for i := 0; i < len(p); i += 1300 {
			op := opCont
			if i == 0 {
				op = opText
			}
			fs = append(fs, frame(op, i+1300 >= len(p), p[i:min(i+1300, len(p))]))
		}
		r.sendFrames(fs...)
		r.expectMessage(opText, p)
		r.closeOK()
	}}}
}

// violationCases are the remaining codec protocol violations and pushd's
// size limits (-max-frame / -max-message 16 MiB here).
func violationCases() []rawCase {
	unmasked := text("unmasked")
	unmasked.noMask = true
	msb := text("")
	msb.msb = true
	return []rawCase{
		{"unmasked-client-frame-fails", func(r *rawConn) {
			r.sendFrames(unmasked)
			r.expectClose(1002)
		}},
		{"64-bit-length-msb-fails", func(r *rawConn) {
			r.sendFrames(msb)
			r.expectClose(1002)
		}},
		{"frame-above-max-frame-1009", func(r *rawConn) {
			// Only the header and 4 KiB of the payload are sent: the limit
			// must be enforced from the header, before buffering.
			f := frame(opBinary, true, binPayload(4<<10))
			f.length = maxSize + 1
			r.sendFrames(f)
			r.expectClose(1009)
		}},
		{"text-frame-above-max-frame-1009", func(r *rawConn) {
			f := frame(opText, false, textPayload(100))
			f.length = 1 << 40
			r.sendFrames(f)
			r.expectClose(1009)
		}},
		{"message-above-max-message-1009", func(r *rawConn) {
			// 17 fragments of 1 MiB: each frame is within -max-frame, the
			// message is not.
			var b []byte
			p := binPayload(1 << 20)
			for i := range 17 {
				op := opCont
				if i == 0 {
					op = opBinary
				}
				b = frame(op, i == 16, p).encode(b)
			}
			r.sendAsync(b)
			r.expectClose(1009)
		}},
		{"message-at-max-message-in-fragments", func(r *rawConn) {
			p := binPayload(maxSize)
			var b []byte
			for i := 0; i < maxSize; i += 1 << 20 {
				op := opCont
				if i == 0 {
					op = opBinary
				}
				b = frame(op, i+1<<20 >= maxSize, p[i:i+1<<20]).encode(b)
			}
			r.sendAsync(b)
			r.expectMessage(opBinary, p)
			r.closeOK()
		}},
		{"control-frames-between-large-fragments", func(r *rawConn) {
			p := binPayload(3 << 20)
			b := wire(frame(opBinary, false, p[:1<<20]), ping([]byte("a")), cont(false, p[1<<20:2<<20]),
				pong([]byte("ignored")), ping([]byte("b")), cont(true, p[2<<20:]))
			r.sendAsync(b)
			r.expectPong([]byte("a"))
			r.expectPong([]byte("b"))
			r.expectMessage(opBinary, p)
			r.closeOK()
		}},
	}
}

// utf8Cases is group 6: UTF-8 handling.
func utf8Cases() []rawCase {
	kosme := "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5" // κόσμε
	valid := "Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!"
	cs := []rawCase{
		{"6.1.1-empty-fragments", func(r *rawConn) {
			r.sendFrames(frame(opText, false, nil), cont(false, nil), cont(true, nil))
			r.expectMessage(opText, []byte{})
			r.closeOK()
		}},
		{"6.1.3-empty-fragments-around-payload", func(r *rawConn) {
			r.sendFrames(frame(opText, false, nil), cont(false, []byte("middle frame payload")), cont(true, nil))
			r.expectMessage(opText, []byte("middle frame payload"))
			r.closeOK()
		}},
		{"6.2.2-valid-split-at-every-byte", func(r *rawConn) {
			// Two fragments, split at every offset: at and inside code
			// points. One connection, one message per split.
			for _, s := range []string{valid, kosme, "\xf0\x9d\x84\x9e\xe2\x82\xac\xc3\xa9"} {
				for k := 0; k <= len(s); k++ {
					r.sendFrames(frame(opText, false, []byte(s[:k])), cont(true, []byte(s[k:])))
					r.expectMessage(opText, []byte(s))
				}
			}
			r.closeOK()
		}},
		{"6.2.3-valid-octet-wise-frames", func(r *rawConn) {
			s := []byte(valid + kosme)
			var fs []rawFrame
			for i := range s {
				op := opCont
				if i == 0 {
					op = opText
				}
				fs = append(fs, frame(op, i == len(s)-1, s[i:i+1]))
			}
			r.sendFrames(fs...)
			r.expectMessage(opText, s)
			r.closeOK()
		}},
		{"6.2.4-valid-split-across-tcp-writes", func(r *rawConn) {
			s := []byte(valid + kosme + "\xf0\x9d\x84\x9e")
			r.sendChopped(wire(textB(s)), 1, time.Millisecond)
			r.expectMessage(opText, s)
			r.closeOK()
		}},
		{"6.3.1-invalid-in-3-fragments", func(r *rawConn) {
			s := []byte(kosme + "\xed\xa0\x80edited")
			r.sendFrames(frame(opText, false, s[:5]), cont(false, s[5:13]), cont(true, s[13:]))
			r.expectClose(1007)
		}},
		{"6.3.2-invalid-octet-wise-frames", func(r *rawConn) {
			s := []byte(kosme + "\xed\xa0\x80edited")
			var fs []rawFrame
			for i := range s {
				op := opCont
				if i == 0 {
					op = opText
				}
				fs = append(fs, frame(op, i == len(s)-1, s[i:i+1]))
			}
			r.sendFrames(fs...)
			r.expectClose(1007)
		}},
		// 6.4 fail-fast: only the invalid prefix is sent, never the rest;
		// the 1007 close must arrive anyway.
		{"6.4.1-fail-fast-fragment", func(r *rawConn) {
			r.sendFrames(frame(opText, false, []byte(kosme)), cont(false, []byte("\xf4\x90\x80\x80")))
			r.expectClose(1007)
		}},
		{"6.4.2-fail-fast-inside-code-point", func(r *rawConn) {
			r.sendFrames(frame(opText, false, []byte(kosme+"\xf4")), cont(false, []byte("\x90")))
			r.expectClose(1007)
		}},
		{"6.4.3-fail-fast-within-frame", func(r *rawConn) {
			f := frame(opText, true, []byte(kosme+"\xf4\x90\x80\x80"))
			f.length = int64(len(kosme) + 4 + len("edited"))
			r.sendFrames(f)
			r.expectClose(1007)
		}},
		{"6.4.4-fail-fast-within-frame-inside-code-point", func(r *rawConn) {
			f := frame(opText, true, []byte(kosme+"\xf4\x90"))
			f.length = int64(len(kosme) + 4 + len("edited"))
			r.sendFrames(f)
			r.expectClose(1007)
		}},
		{"6.4.x-fail-fast-long-message", func(r *rawConn) {
			// A 1 MiB text frame whose 11th byte is invalid; 4 KiB sent.
			p := textPayload(4 << 10)
			p[10] = 0xff
			f := frame(opText, true, p)
			f.length = 1 << 20
			r.sendFrames(f)
			r.expectClose(1007)
		}},
		{"6.4.x-fail-fast-long-fragmented-message", func(r *rawConn) {
			r.sendFrames(frame(opText, false, textPayload(64<<10)), cont(false, []byte("ok\xc0\xafmore")))
			r.expectClose(1007)
		}},
	}
	for _, v := range utf8Vectors {
		cs = append(cs, rawCase{fmt.Sprintf("6-kuhn-%s", v.name), func(r *rawConn) {
			r.sendFrames(textB([]byte(v.s)))
			if v.ok {
				r.expectMessage(opText, []byte(v.s))
				r.closeOK()
				return
			}
			r.expectClose(1007)
		}})
	}
	// Invalid sequences also fail when split across fragments.
	for _, v := range utf8Vectors {
		if v.ok || len(v.s) < 2 {
			continue
		}
		cs = append(cs, rawCase{fmt.Sprintf("6-kuhn-fragmented-%s", v.name), func(r *rawConn) {
			b := []byte("ab" + v.s)
			var fs []rawFrame
			for i := range b {
				op := opCont
				if i == 0 {
					op = opText
				}
				fs = append(fs, frame(op, i == len(b)-1, b[i:i+1]))
			}
			r.sendFrames(fs...)
			r.expectClose(1007)
		}})
	}
	return cs
}

// utf8Vectors is a selection of Markus Kuhn's UTF-8 decoder stress test
// (Autobahn 6.5-6.23).
var utf8Vectors = [...]struct {
	name string
	s    string
	ok   bool
}{
	{"kosme", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", true},
	{"first-1-byte-U+0000", "\x00", true},
	{"first-2-byte-U+0080", "\xc2\x80", true},
	{"first-3-byte-U+0800", "\xe0\xa0\x80", true},
	{"first-4-byte-U+10000", "\xf0\x90\x80\x80", true},
	{"last-1-byte-U+007F", "\x7f", true},
	{"last-2-byte-U+07FF", "\xdf\xbf", true},
	{"last-3-byte-U+FFFF", "\xef\xbf\xbf", true},
	{"last-4-byte-U+10FFFF", "\xf4\x8f\xbf\xbf", true},
	{"U+D7FF", "\xed\x9f\xbf", true},
	{"U+E000", "\xee\x80\x80", true},
	{"U+FFFD", "\xef\xbf\xbd", true},
	{"noncharacter-U+FFFE", "\xef\xbf\xbe", true},
	{"noncharacter-U+FFFF", "\xef\xbf\xbf", true},
	{"noncharacter-U+1FFFE", "\xf0\x9f\xbf\xbe", true},
	{"noncharacter-U+10FFFE", "\xf4\x8f\xbf\xbe", true},
	{"noncharacter-U+FDD0", "\xef\xb7\x90", true},
	{"above-U+10FFFF", "\xf4\x90\x80\x80", false},
	{"4-byte-U+1FFFFF", "\xf7\xbf\xbf\xbf", false},
	{"5-byte-first", "\xf8\x88\x80\x80\x80", false},
	{"5-byte-last", "\xfb\xbf\xbf\xbf\xbf", false},
	{"6-byte-first", "\xfc\x84\x80\x80\x80\x80", false},
	{"6-byte-last", "\xfd\xbf\xbf\xbf\xbf\xbf", false},
	{"lone-continuation-80", "\x80", false},
	{"lone-continuation-bf", "\xbf", false},
	{"two-continuations", "\x80\xbf", false},
	{"three-continuations", "\x80\xbf\x80", false},
	{"continuation-after-ascii", "a\x80b", false},
	{"lonely-start-c0", "\xc0 ", false},
	{"lonely-start-e0", "\xe0 ", false},
	{"lonely-start-f0", "\xf0 ", false},
	{"2-byte-last-missing", "\xc2", false},
	{"3-byte-last-missing", "\xe0\x80", false},
	{"3-byte-last-missing-valid-lead", "\xef\xbf", false},
	{"4-byte-last-missing", "\xf7\xbf\xbf", false},
	{"impossible-fe", "\xfe", false},
	{"impossible-ff", "\xff", false},
	{"impossible-fefeffff", "\xfe\xfe\xff\xff", false},
	{"overlong-slash-2", "\xc0\xaf", false},
	{"overlong-slash-3", "\xe0\x80\xaf", false},
	{"overlong-slash-4", "\xf0\x80\x80\xaf", false},
	{"overlong-slash-5", "\xf8\x80\x80\x80\xaf", false},
	{"overlong-max-2", "\xc1\xbf", false},
	{"overlong-max-3", "\xe0\x9f\xbf", false},
	{"overlong-max-4", "\xf0\x8f\xbf\xbf", false},
	{"overlong-nul-2", "\xc0\x80", false},
	{"overlong-nul-3", "\xe0\x80\x80", false},
	{"surrogate-U+D800", "\xed\xa0\x80", false},
	{"surrogate-U+DB7F", "\xed\xad\xbf", false},
	{"surrogate-U+DFFF", "\xed\xbf\xbf", false},
	{"surrogate-pair-U+D800-U+DC00", "\xed\xa0\x80\xed\xb0\x80", false},
	{"invalid-after-valid-text", "Hello world \xed\xa0\x80 tail", false},
}

// sanity: the vectors agree with the Go standard library's view.
func TestUTF8VectorsAgreeWithStdlib(t *testing.T) {
	t.Parallel()
	for _, v := range utf8Vectors {
		if got := utf8.ValidString(v.s); got != v.ok {
			t.Errorf("%s: utf8.ValidString = %v, table says %v", v.name, got, v.ok)
		}
	}
	if !bytes.Equal(textPayload(len(textUnit)), []byte(textUnit)) || len(textUnit) != 17 {
		t.Fatalf("textUnit is %d bytes", len(textUnit))
	}
}
