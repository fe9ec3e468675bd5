package fanout

import (
	"fmt"

	"github.com/gobwas/ws"

	"github.com/pushd/pushd/codec"
)

// permessage-deflate on the fan-out path. A subscriber that negotiated
// permessage-deflate (SubscribeOptions.Deflate) on a channel that
// DeflateConfig selects gets each publication as one compressed frame built
// once per wire format for every such subscriber: the server compresses
// without context takeover (RFC 7692 server_no_context_takeover), so the
// compressed bytes do not depend on what the connection received before.
// Subscribers that did not negotiate get the plain frame of the same
// publication. A compressed frame is used only when it is smaller than the
// plain one.

// DefaultDeflateMinSize is DeflateConfig.MinSize when zero: below it a
// payload goes uncompressed (see README, "permessage-deflate").
const DefaultDeflateMinSize = 512

// DeflateConfig selects which publications are compressed for subscribers
// that negotiated permessage-deflate.
type DeflateConfig struct {
	// Channels are the channel patterns (MatchPattern) whose publications
	// are compressed; none: nothing is compressed.
	Channels []string
	// MinSize is the smallest payload (Publication.Data) compressed;
	// zero: DefaultDeflateMinSize, negative: every size.
	MinSize int
	// Level is the flate level, 1 (fastest) to 9; zero:
	// codec.DefaultDeflateLevel.
	Level int
}

func (d *DeflateConfig) validate() error {
	if d.Level < 0 || d.Level > 9 {
		return fmt.Errorf("Deflate.Level %d is not 0-9", d.Level)
	}
	for _, p := range d.Channels {
		if p == "" {
			return fmt.Errorf("Deflate.Channels: empty pattern")
		}
	}
	return nil
}

// deflateFor reports whether channel name's publications are compressed.
func (h *Hub) deflateFor(name string) bool {
	for _, p := range h.cfg.Deflate.Channels {
		if MatchPattern(p, name) {
			return true
		}
	}
	return false
}

// deflaters keeps idle *codec.Compressor (about 480 KiB of flate state
// each at level 1) in a bounded free list: one is held only while a
// publication is compressed, so their number follows the delivery tasks
// running at once, not the channels. Not a sync.Pool: every GC would drop
// them and the next publications would rebuild 480 KiB each
// (BenchmarkDeflateFanout measured ~10 KB/op allocated with a sync.Pool,
// the compressed frame alone with the free list).
type deflaters struct {
	level int
	free  chan *codec.Compressor
}

func (d *deflaters) get() *codec.Compressor {
	select {
	case z := <-d.free:
		return z
	default:
		return &codec.Compressor{Level: d.level}
	}
}

func (d *deflaters) put(z *codec.Compressor) {
	select {
	case d.free <- z:
	default: // more were in use at once than the list keeps
	}
}

// compressFrame returns plain (a complete unmasked server frame built by
// encodePush) as one compressed frame with RSV1 set, or nil when
// compressing does not make it smaller or fails.
func (h *Hub) compressFrame(plain []byte) []byte {
	op, body := frameBody(plain)
	z := h.deflaters.get()
	fr, err := z.CompileFrame(op, body)
	h.deflaters.put(z)
	if err != nil || len(fr) >= len(plain) {
		h.stats.deflateSkipped.Add(1)
		return nil
	}
	h.stats.deflated.Add(1)
	h.stats.deflateSaved.Add(uint64(len(plain) - len(fr)))
	return fr
}

// frameBody splits a frame built by this package (FIN, unmasked, RSV clear)
// into its opcode and payload.
func frameBody(fr []byte) (ws.OpCode, []byte) {
	hl := 2
	switch fr[1] & 0x7f {
	case 126:
		hl = 4
	case 127:
		hl = 10
	}
	return ws.OpCode(fr[0] & 0x0f), fr[hl:]
}

// compressBatch fills c.dl.zframes for the formats whose deflate
// subscribers are in the snapshot: entry i is the compressed frame of
// c.dl.batch[i], nil when it goes plain (too small, not smaller). Run by the
// delivery task after c.dl.frames is filled.
func (c *channel) compressBatch() {
	minSize := c.hub.cfg.Deflate.MinSize
	for f := range numFormats {
		if !c.dl.needZ[f] {
			continue
		}
		for i := range c.dl.batch {
			var z []byte
			if fr := c.dl.frames[f][i]; fr != nil && len(c.dl.batch[i].Data) >= minSize {
				z = c.hub.compressFrame(fr)
			}
			c.dl.zframes[f] = append(c.dl.zframes[f], z)
		}
	}
}

// frameFor picks publication i's frame for s: the compressed one when s
// negotiated deflate and one was built, else the plain one.
func (c *channel) frameFor(s *Subscription, plain [][]byte, i int) []byte {
	if s.deflate {
		if z := c.dl.zframes[s.format]; i < len(z) && z[i] != nil {
			return z[i]
		}
	}
	return plain[i]
}
