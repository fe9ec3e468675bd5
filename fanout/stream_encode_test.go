package fanout

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// parseSSE is a minimal EventSource parser (WHATWG HTML §9.2.6) for one
// event: it returns the event type, the id and the data buffer.
func parseSSE(t testing.TB, b []byte) (event, id, data string) {
	t.Helper()
	if !bytes.HasSuffix(b, []byte("\n\n")) {
		t.Fatalf("event does not end in a blank line: %q", b)
	}
	var lines []string
	for _, l := range strings.Split(string(b[:len(b)-2]), "\n") {
		if strings.ContainsRune(l, '\r') {
			t.Fatalf("CR inside a line: %q", b)
		}
		name, value, _ := strings.Cut(l, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "event":
			event = value
		case "id":
			id = value
		case "data":
			lines = append(lines, value)
		default:
			t.Fatalf("unexpected field %q in %q", name, b)
		}
	}
	return event, id, strings.Join(lines, "\n")
}

// sseExpect is what EventSource gives the application for payload p.
func sseExpect(p []byte) string {
	s := strings.ToValidUTF8(string(p), "\uFFFD")
	// Go's ToValidUTF8 replaces a run of invalid bytes with one
	// replacement; EventSource (and appendSSEData) replace each byte.
	if !utf8.Valid(p) {
		var b strings.Builder
		for i := 0; i < len(p); {
			r, size := utf8.DecodeRune(p[i:])
			b.WriteRune(r)
			i += size
		}
		s = b.String()
	}
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.ReplaceAll(s, "\r", "\n")
}

func TestEncodeSSEPush(t *testing.T) {
	for _, tc := range []struct {
		pub  Publication
		want string
	}{
		{Publication{Channel: "news", Epoch: "e1", Seq: 7, Data: []byte(`{"a":1}`)}, "event: news\nid: e1:7\ndata: {\"a\":1}\n\n"},
		{Publication{Channel: "x", Data: []byte("a\nb\r\nc\rd")}, "event: x\ndata: a\ndata: b\ndata: c\ndata: d\n\n"},
		{Publication{Channel: "x", Epoch: "E", Seq: 1, Data: []byte("\xffok")}, "event: x\nid: E:1\ndata: \uFFFDok\n\n"},
		{Publication{Channel: "x", Epoch: "E", Seq: 2, Data: []byte("end\n")}, "event: x\nid: E:2\ndata: end\ndata: \n\n"},
	} {
		got := encodePush(FormatSSE, &tc.pub, false)
		if string(got) != tc.want {
			t.Errorf("%q: got %q want %q", tc.pub.Data, got, tc.want)
		}
		if len(got) != cap(got) {
			t.Errorf("%q: len %d cap %d: the size was not computed exactly", tc.pub.Data, len(got), cap(got))
		}
	}
}

func TestEncodeNDJSONPush(t *testing.T) {
	pub := Publication{Channel: "c\"h", Epoch: "e", Seq: 3, Data: []byte("not json\n")}
	got := encodePush(FormatNDJSON, &pub, payloadIsJSON(pub.Data))
	if got[len(got)-1] != '\n' || bytes.Count(got, []byte("\n")) != 1 || len(got) != cap(got) {
		t.Fatalf("not one exact line: %q", got)
	}
	var m struct {
		Ch, Epoch, Data string
		Seq             uint64
	}
	if err := json.Unmarshal(got, &m); err != nil || m.Ch != pub.Channel || m.Epoch != "e" || m.Seq != 3 || m.Data != "not json\n" {
		t.Fatalf("%q: %+v %v", got, m, err)
	}
	// The same object a WebSocket JSON subscriber gets.
	if ws := encodePush(FormatJSON, &pub, false); !bytes.Equal(wsPayload(ws), got[:len(got)-1]) {
		t.Fatalf("ndjson %q differs from the json frame's payload %q", got, wsPayload(ws))
	}
}

func TestEncodeStreamGapAndControl(t *testing.T) {
	g := encodeGapFor(FormatSSE, "ch", "e", 3, 5)
	ev, id, data := parseSSE(t, g)
	if ev != SSEControlEvent || id != "" || data != `{"op":"gap","ch":"ch","epoch":"e","from":3,"to":5}` {
		t.Fatalf("sse gap %q", g)
	}
	if g := encodeGapFor(FormatNDJSON, "ch", "", 0, 0); string(g) != "{\"op\":\"gap\",\"ch\":\"ch\",\"from\":0,\"to\":0}\n" {
		t.Fatalf("ndjson gap %q", g)
	}
	if EncodeStreamControl(FormatJSON, []byte("{}")) != nil {
		t.Fatal("control frame for a WebSocket format")
	}
}

func TestEncodeSSEAllocs(t *testing.T) {
	pub := Publication{Channel: "room:1", Epoch: "abc", Seq: 99, Data: []byte(`{"text":"hello"}`)}
	for _, f := range []Format{FormatSSE, FormatNDJSON} {
		if n := testing.AllocsPerRun(100, func() { _ = encodePush(f, &pub, true) }); n != 1 {
			t.Errorf("%v: %v allocations per push, want 1", f, n)
		}
	}
}

// FuzzEncodeSSE: whatever the payload, the event parses back (EventSource
// rules) to the channel, the id and the payload as EventSource delivers it,
// and its size was computed exactly.
func FuzzEncodeSSE(f *testing.F) {
	for _, s := range []string{"", "x", "a\nb", "a\r\nb", "\r\r\n\n", "\xff\xfe", "é\u2028", "data: x\n\nevent: y"} {
		f.Add([]byte(s), uint64(1))
	}
	f.Fuzz(func(t *testing.T, data []byte, seq uint64) {
		pub := Publication{Channel: "ch", Epoch: "E", Seq: seq, Data: data}
		b := encodePush(FormatSSE, &pub, false)
		if len(b) != cap(b) {
			t.Fatalf("len %d cap %d", len(b), cap(b))
		}
		ev, id, got := parseSSE(t, b)
		wantID := ""
		if seq != 0 {
			wantID = "E:" + uintString(seq)
		}
		if ev != "ch" || id != wantID || got != sseExpect(data) {
			t.Fatalf("%q -> %q: event %q id %q data %q want %q", data, b, ev, id, got, sseExpect(data))
		}
	})
}

func uintString(v uint64) string { return string(appendUint(nil, v)) }

func appendUint(b []byte, v uint64) []byte {
	if v >= 10 {
		b = appendUint(b, v/10)
	}
	return append(b, byte('0'+v%10))
}
