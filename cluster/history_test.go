package cluster

import (
	"bytes"
	"testing"

	"github.com/pushd/pushd/fanout"
)

func TestParseHistory(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    []any
		ok   bool
		top  uint64
		ep   string
		seqs []uint64
	}{
		{"top only", []any{int64(7), "e1"}, true, 7, "e1", nil},
		{"no stream", []any{int64(0), ""}, true, 0, "", nil},
		{"entries", []any{int64(3), "e1", "2-0", "a", "3-0", "b"}, true, 3, "e1", []uint64{2, 3}},
		{"v1 reply without epoch", []any{int64(3)}, false, 0, "", nil},
		{"odd", []any{int64(3), "e1", "2-0"}, false, 0, "", nil},
		{"bad epoch", []any{int64(3), "a b"}, false, 0, "", nil},
		{"epoch not a string", []any{int64(3), int64(5)}, false, 0, "", nil},
		{"negative top", []any{int64(-1), "e1"}, false, 0, "", nil},
		{"bad id", []any{int64(3), "e1", "x-0", "a"}, false, 0, "", nil},
		{"zero id", []any{int64(3), "e1", "0-0", "a"}, false, 0, "", nil},
		{"empty", nil, false, 0, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := parseHistory("ch", tc.v)
			if (err == nil) != tc.ok {
				t.Fatalf("err %v, want ok=%v", err, tc.ok)
			}
			if err != nil {
				return
			}
			if st.top != tc.top || st.epoch != tc.ep || len(st.pubs) != len(tc.seqs) {
				t.Fatalf("got %+v", st)
			}
			for i, p := range st.pubs {
				if p.Seq != tc.seqs[i] || p.Epoch != tc.ep || p.Channel != "ch" {
					t.Fatalf("pub %d = %+v", i, p)
				}
			}
		})
	}
}

// FuzzParseHistory: parseHistory (the parser of pushd_history's reply,
// bytes from Redis) never panics; an accepted reply has a valid or empty
// epoch carried by every publication, a non-zero seq per entry and one
// publication per (id, payload) pair. blob is split at NUL bytes into the
// reply's entries.
func FuzzParseHistory(f *testing.F) {
	f.Add(int64(3), "e1", []byte("2-0\x00a\x003-0\x00b"), true)
	f.Add(int64(0), "", []byte(""), true)
	f.Add(int64(9), "6752a3b1e0c2f", []byte("18446744073709551616-0\x00x"), true)
	f.Add(int64(-4), "a b", []byte("1-0"), false)
	f.Fuzz(func(t *testing.T, top int64, epoch string, blob []byte, epochIsString bool) {
		v := []any{top, any(epoch)}
		if !epochIsString {
			v[1] = int64(len(epoch))
		}
		if len(blob) > 0 {
			for _, part := range bytes.Split(blob, []byte{0}) {
				v = append(v, string(part))
			}
		}
		st, err := parseHistory("ch", v)
		if err != nil {
			return
		}
		if top < 0 || st.top != uint64(top) || (st.epoch != "" && !fanout.ValidEpoch(st.epoch)) || len(st.pubs) != (len(v)-2)/2 {
			t.Fatalf("parseHistory(%v) = %+v", v, st)
		}
		for _, p := range st.pubs {
			if p.Seq == 0 || p.Epoch != st.epoch {
				t.Fatalf("pub %+v", p)
			}
		}
	})
}
