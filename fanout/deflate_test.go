package fanout_test

import (
	"bytes"
	"compress/flate"
	"fmt"
	"io"
	"strings"
	"testing"
	"unsafe"

	"github.com/gobwas/ws"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/codec"
	"github.com/pushd/pushd/fanout"
)

// inflate decompresses a permessage-deflate message payload with the
// standard library (an implementation independent of the server's).
func inflate(t *testing.T, z []byte) []byte {
	t.Helper()
	r := flate.NewReader(io.MultiReader(bytes.NewReader(z), strings.NewReader("\x00\x00\xff\xff\x01\x00\x00\xff\xff")))
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("inflate %d bytes: %v", len(z), err)
	}
	return out
}

// kept returns the frames f was given, each with its header.
func (f *fakeSub) kept() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.log...)
}

func TestDeflateOncePerFormat(t *testing.T) {
	h, m := newHub(t, fanout.Config{Deflate: fanout.DeflateConfig{Channels: []string{"game:*"}, MinSize: 256}}, cluster.MemoryConfig{})
	type member struct {
		sub  *fakeSub
		opts fanout.SubscribeOptions
	}
	members := []member{
		{newFakeSub(0), fanout.SubscribeOptions{Deflate: true}},
		{newFakeSub(0), fanout.SubscribeOptions{Deflate: true}},
		{newFakeSub(0), fanout.SubscribeOptions{}},
		{newFakeSub(0), fanout.SubscribeOptions{Format: fanout.FormatRaw, Deflate: true}},
		{newFakeSub(0), fanout.SubscribeOptions{Format: fanout.FormatRaw, Deflate: true}},
		{newFakeSub(0), fanout.SubscribeOptions{Format: fanout.FormatRaw}},
	}
	for _, ch := range []string{"game:1", "chat:1"} {
		for _, mb := range members {
			mb.sub.keep = true
			subscribe(t, h, mb.sub, ch, mb.opts)
		}
	}
	big := fmt.Sprintf(`{"players":[%s0]}`, strings.Repeat(`{"x":12,"y":34,"hp":100,"name":"player"},`, 100))
	bin := bytes.Repeat([]byte{0xff, 0x00, 0x80, 0x01}, 300) // not UTF-8: binary in raw, base64 in JSON
	pubs := []struct {
		ch, data string
		compress bool
	}{
		{"game:1", big, true},
		{"game:1", `{"small":1}`, false}, // below MinSize
		{"chat:1", big, false},           // channel not selected
		{"game:1", string(bin), true},
	}
	for _, p := range pubs {
		publish(t, m, p.ch, p.data)
	}
	plainOf := func(mb member, i int) []byte { return members[2+3*int(mb.opts.Format)].sub.kept()[i] }
	saw := map[[2]int]uintptr{} // (pub, format) -> first compressed frame's address
	for mi, mb := range members {
		got := mb.sub.kept()
		if len(got) != len(pubs) {
			t.Fatalf("member %d got %d frames, want %d", mi, len(got), len(pubs))
		}
		for i, p := range pubs {
			fr := got[i]
			hd, n, err := codec.ParseHeader(fr)
			if err != nil {
				t.Fatal(err)
			}
			compressed := hd.Rsv == ws.Rsv(true, false, false)
			if want := p.compress && mb.opts.Deflate; compressed != want {
				t.Fatalf("member %d (%v deflate=%v) pub %d: compressed=%v, want %v", mi, mb.opts.Format, mb.opts.Deflate, i, compressed, want)
			}
			plain := plainOf(mb, i)
			_, pn, _ := codec.ParseHeader(plain)
			if !compressed {
				if !bytes.Equal(fr, plain) {
					t.Fatalf("member %d pub %d: plain frame differs from the plain subscriber's", mi, i)
				}
				continue
			}
			if !bytes.Equal(inflate(t, fr[n:]), plain[pn:]) {
				t.Fatalf("member %d pub %d: inflated frame differs from the plain one", mi, i)
			}
			if len(fr) >= len(plain) {
				t.Fatalf("member %d pub %d: compressed %d bytes, plain %d", mi, i, len(fr), len(plain))
			}
			key := [2]int{i, int(mb.opts.Format)}
			addr := uintptr(unsafe.Pointer(unsafe.SliceData(fr)))
			if first, ok := saw[key]; ok && first != addr {
				t.Fatalf("pub %d format %v: deflate subscribers got different compressed buffers (compressed per subscriber)", i, mb.opts.Format)
			}
			saw[key] = addr
			t.Logf("pub %d %v: plain %d B, compressed %d B", i, mb.opts.Format, len(plain), len(fr))
		}
	}
	if st := h.Stats(); st.Deflated != 4 {
		t.Fatalf("Deflated = %d, want 4 (2 publications × 2 formats, once each)", st.Deflated)
	}
}

func TestDeflateConfigErrors(t *testing.T) {
	m, err := cluster.NewMemory(cluster.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []fanout.DeflateConfig{{Level: 10}, {Level: -1}, {Channels: []string{""}}} {
		if _, err := fanout.New(fanout.Config{Broker: m, Deflate: cfg}); err == nil {
			t.Errorf("New with Deflate %+v succeeded", cfg)
		}
	}
}
