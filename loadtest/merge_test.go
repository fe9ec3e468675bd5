package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// shardReport builds a shard report of run "r1" (3 shards, shard 0
// publishes) whose personal latency histogram holds samples.
func shardReport(i int, samples []int64) *Report {
	lat := newHist()
	for _, v := range samples {
		_ = lat.RecordValue(v)
	}
	r := &Report{Schema: ReportVersion, Seed: 7, Requested: 300, Held: 100, Expected: 1000, Delivered: 1000,
		Errors: map[string]uint64{}, CloseCodes: map[string]uint64{}, SendSeconds: 2,
		Shard: &ShardInfo{RunID: "r1", Index: i, Count: 3, Role: "shard", Publishes: i == 0, ConfigDigest: "d1",
			MaxClockOffsetUs: 10_000, ClockOffsetUs: int64(i) * 100, ConnsLo: i * 100, ConnsHi: (i + 1) * 100},
		SLO: SLOResult{MinDelivery: 1, MaxP99Us: 10_000}}
	if i == 0 {
		r.PublishedPersonal = 300
	}
	r.setRates()
	r.setLatencies(newHist(), newHist(), lat, newHist())
	return r
}

func repeat(v int64, n int) []int64 {
	s := make([]int64, n)
	for i := range s {
		s[i] = v
	}
	return s
}

// TestMergeKnownP99 is the merge's exactness on a known answer: shard 0
// saw 1,000 samples of 1 ms, shard 1 1,000 of 2 ms, shard 2 980 of 3 ms
// and 20 of 50 ms. Of the 3,000 samples together the 2,970th is 3 ms: that
// is the run's p99. The shards' own p99s are 1, 2 and 50 ms: their mean
// (17.7 ms) and their maximum (50 ms) are both wrong.
func TestMergeKnownP99(t *testing.T) {
	reps := []*Report{
		shardReport(0, repeat(1000, 1000)),
		shardReport(1, repeat(2000, 1000)),
		shardReport(2, append(repeat(3000, 980), repeat(50_000, 20)...)),
	}
	if got := reps[2].Latency.P99; !newHist().ValuesAreEquivalent(got, 50_000) {
		t.Fatalf("shard 2's own p99 %d, want 50ms (the test's premise)", got)
	}
	m, err := mergeReports([]string{"a", "b", "c"}, reps)
	if err != nil {
		t.Fatal(err)
	}
	if !newHist().ValuesAreEquivalent(m.Latency.P99, 3000) {
		t.Fatalf("merged p99 %dµs, want 3ms (the p99 of all 3,000 samples)", m.Latency.P99)
	}
	if m.Latency.Count != 3000 || !newHist().ValuesAreEquivalent(m.Latency.Max, 50_000) || !newHist().ValuesAreEquivalent(m.Latency.P50, 2000) {
		t.Fatalf("merged latency %+v", m.Latency)
	}
	if m.Held != 300 || m.Expected != 3000 || m.Delivered != 3000 || m.PublishedPersonal != 300 || m.DeliveryRatio != 1 {
		t.Fatalf("counts: held %d expected %d delivered %d published %d ratio %v", m.Held, m.Expected, m.Delivered, m.PublishedPersonal, m.DeliveryRatio)
	}
	// The SLO (p99 ≤ 10 ms, delivery 1) holds on the merged histogram,
	// though shard 2 alone breaches it.
	if m.ExitCode != ExitOK || m.Verdict != "OK (exit 0)" {
		t.Fatalf("verdict %q exit %d", m.Verdict, m.ExitCode)
	}
	if m.Merged.MaxClockOffsetUs != 200 || m.Merged.ClockFlagged {
		t.Fatalf("clock %+v", m.Merged)
	}
	// A shard's clock 20 ms away from the publisher's is flagged.
	reps[1].Shard.ClockOffsetUs = -20_000
	if m, err = mergeReports([]string{"a", "b", "c"}, reps); err != nil || !m.Merged.ClockFlagged || m.Merged.MaxClockOffsetUs != 20_000 {
		t.Fatalf("clock 20ms off: %+v %v", m.Merged, err)
	}
	var out bytes.Buffer
	m.printHuman(&out)
	if !strings.Contains(out.String(), "clock: max offset from the publisher 20000µs, bound 10000µs: FLAGGED") {
		t.Fatalf("flag not printed:\n%s", out.String())
	}
}

// TestMergeEqualsAllSamples splits random samples over 3 shards at random
// and checks that every percentile of the merged report equals that of
// one histogram holding all samples, and that the p99 is the sample of
// rank round(0.99·n) (HDR's definition) of all samples sorted, to the
// histogram's precision (3 significant digits).
func TestMergeEqualsAllSamples(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 5 {
		var parts [3][]int64
		var all []int64
		for range 1 + rng.IntN(20_000) {
			v := int64(rng.ExpFloat64()*2000) + 1 // long tail, µs
			if rng.IntN(100) == 0 {
				v += int64(rng.IntN(500_000))
			}
			k := rng.IntN(3)
			parts[k] = append(parts[k], v)
			all = append(all, v)
		}
		reps := []*Report{shardReport(0, parts[0]), shardReport(1, parts[1]), shardReport(2, parts[2])}
		m, err := mergeReports([]string{"a", "b", "c"}, reps)
		if err != nil {
			t.Fatal(err)
		}
		one := newHist()
		for _, v := range all {
			_ = one.RecordValue(v)
		}
		if want := percentiles(one); m.Latency != want {
			t.Fatalf("round %d: merged %+v, all samples %+v", round, m.Latency, want)
		}
		slices.Sort(all)
		// HDR's rank for p99: round(0.99·n), at least 1.
		exact := all[max(int(0.99*float64(len(all))+0.5), 1)-1]
		if !one.ValuesAreEquivalent(m.Latency.P99, exact) {
			t.Fatalf("round %d: merged p99 %d, sorted samples' p99 %d", round, m.Latency.P99, exact)
		}
	}
}

// TestMergeRefuses: shards of another run, another seed, another
// configuration or another N, a missing shard, a shard twice, two
// publishers, and a report of an unsharded run are each refused with a
// clear error; the command exits 2.
func TestMergeRefuses(t *testing.T) {
	fresh := func() []*Report {
		return []*Report{shardReport(0, []int64{5}), shardReport(1, []int64{5}), shardReport(2, []int64{5})}
	}
	cases := []struct {
		name  string
		edit  func([]*Report) []*Report
		wants []string
	}{
		{"other run", func(r []*Report) []*Report { r[1].Shard.RunID = "r2"; return r }, []string{`b belongs to run "r2", a to run "r1"`}},
		{"other seed", func(r []*Report) []*Report { r[2].Seed = 8; return r }, []string{"c has seed 8, a seed 7"}},
		{"other config", func(r []*Report) []*Report { r[2].Shard.ConfigDigest = "d2"; return r }, []string{"configuration digest d2", "different flags"}},
		{"other N", func(r []*Report) []*Report { r[1].Shard.Count = 4; return r }, []string{"b is a shard of 4, a of 3"}},
		{"missing", func(r []*Report) []*Report { return r[:2] }, []string{"run r1 has 3 shards, shard(s) 2 missing"}},
		{"twice", func(r []*Report) []*Report { r[2].Shard.Index = 1; return r }, []string{"shard 1/3 appears twice (b and c)"}},
		{"two publishers", func(r []*Report) []*Report { r[1].Shard.Publishes = true; return r }, []string{"both a and b published"}},
		{"not a shard", func(r []*Report) []*Report { r[0].Shard = nil; return r }, []string{"a is not a shard's report"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reps := tc.edit(fresh())
			names := []string{"a", "b", "c"}[:len(reps)]
			_, err := mergeReports(names, reps)
			if err == nil {
				t.Fatal("merged")
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			// The command: the same refusal on files, exit 2.
			dir := t.TempDir()
			var files []string
			for i, r := range reps {
				p := filepath.Join(dir, names[i])
				if err := writeJSON(p, r); err != nil {
					t.Fatal(err)
				}
				files = append(files, p)
			}
			var out, errb bytes.Buffer
			code := run(context.Background(), append([]string{"merge"}, files...), &out, &errb)
			if code != ExitUsage || !strings.Contains(errb.String(), "loadtest: merge refused: ") {
				t.Fatalf("exit %d, want %d\n%s%s", code, ExitUsage, out.String(), errb.String())
			}
		})
	}
}

// TestMergeCommand runs `loadtest merge` on files: the table, the JSON
// and the SLO exit code of the merged numbers.
func TestMergeCommand(t *testing.T) {
	dir := t.TempDir()
	reps := []*Report{shardReport(0, repeat(1000, 100)), shardReport(1, repeat(2000, 100)), shardReport(2, repeat(30_000, 5))}
	// One lost (min-delivery 1 is breached), and 5 of the 205 samples at
	// 30 ms make the merged p99 (rank 203) 30 ms > 10 ms.
	reps[2].Delivered = 999
	var files []string
	for i, r := range reps {
		r.setRates()
		p := filepath.Join(dir, string(rune('a'+i))+".json")
		if err := writeJSON(p, r); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	js := filepath.Join(dir, "merged.json")
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code := run(ctx, append([]string{"merge", "-json", js}, files...), &out, &errb)
	if code != ExitSLOBreach {
		t.Fatalf("exit %d, want %d\n%s%s", code, ExitSLOBreach, out.String(), errb.String())
	}
	for _, w := range []string{"delivery          ratio 0.999667: 2999 of 3000 delivered, 1 lost", "merged            3 shards of run r1",
		"SLO               BREACHED (exit 3): p99 30.015ms > 10ms; delivery ratio 0.999667 < 1.000000"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("table lacks %q:\n%s", w, out.String())
		}
	}
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	var m Report
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	h, err := hdrhistogram.Decode([]byte(m.Histograms.Latency))
	if err != nil || h.TotalCount() != 205 || m.ExitCode != ExitSLOBreach || m.Merged == nil || len(m.Merged.Files) != 3 {
		t.Fatalf("merged json: hist %v/%v exit %d merged %+v", h, err, m.ExitCode, m.Merged)
	}
}

// FuzzMergeDecode: any bytes given to merge as a report are either
// refused with an error or merged; never a panic.
func FuzzMergeDecode(f *testing.F) {
	b, _ := json.Marshal(shardReport(0, []int64{5, 7}))
	f.Add(b)
	f.Add([]byte(`{"schema":"pushd.loadtest.v1","shard":{"count":1,"publishes":true},"histograms":{"latency":"x"}}`))
	f.Add([]byte(`{"schema":"pushd.loadtest.v1","shard":{"count":-1}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeReport("f", b)
		if err != nil {
			return
		}
		_, _ = mergeReports([]string{"f"}, []*Report{r})
	})
}

// FuzzShardFlag: -shard accepts exactly i/N with 0 ≤ i < N ≤ maxShards.
func FuzzShardFlag(f *testing.F) {
	for _, s := range []string{"0/3", "2/3", "3/3", "-1/3", "0/0", "1/4097", "a/b", "1", "1/2/3", " 1/2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var o options
		fs := newFlagSet(&o, io.Discard)
		err := fs.Parse([]string{"-shard", s})
		if err != nil {
			return
		}
		if !(0 <= o.shard.index && o.shard.index < o.shard.count && o.shard.count <= maxShards) || o.shard.spec != s {
			t.Fatalf("-shard %q accepted as %d/%d", s, o.shard.index, o.shard.count)
		}
	})
}

// TestShardUsage: sharded runs refuse incomplete flags with the reason.
func TestShardUsage(t *testing.T) {
	base := []string{"-target", "ws://127.0.0.1:1/ws", "-rate", "0", "-conns", "30"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-shard", "0/3"}, "-shard needs -start-at"},
		{[]string{"-shard", "0/3", "-start-at", "tomorrow"}, "is not RFC 3339"},
		{[]string{"-shard", "0/3", "-start-at", "2026-12-05T15:00:00Z", "-ramp-timeout", "1m"}, "-shard needs -redis"},
		{[]string{"-shard", "0/3", "-start-at", "2026-12-05T15:00:00Z", "-redis", "redis://x"}, "-shard needs -ramp-timeout"},
		{[]string{"-shard", "3/3"}, "want i/N"},
		{[]string{"-start-at", "2026-12-05T15:00:00Z"}, "need -shard"},
		{[]string{"-shard", "0/3", "-role", "boss"}, `-role "boss"`},
	} {
		code, _, errs := runInProcess(t, append(append([]string{}, base...), tc.args...)...)
		if code != ExitUsage || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, want %d with %q:\n%s", tc.args, code, ExitUsage, tc.want, errs)
		}
	}
}
