package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// ErrMerge means `loadtest merge` refused its input (exit code 2).
var ErrMerge = errors.New("merge refused")

// MergeInfo is the part of a merged report that says what was merged.
type MergeInfo struct {
	RunID        string   `json:"run_id"`
	ConfigDigest string   `json:"config_digest"`
	Shards       int      `json:"shards"`
	Files        []string `json:"files"`
	// MaxClockOffsetUs is the largest |offset| of a shard's clock from the
	// publisher's (each measured against Redis TIME); ClockFlagged is set
	// when it exceeds ClockBoundUs: cross-host latencies are then off by
	// up to that much.
	MaxClockOffsetUs int64 `json:"max_clock_offset_us"`
	ClockBoundUs     int64 `json:"clock_bound_us"`
	ClockFlagged     bool  `json:"clock_flagged"`
	// Late lists shards that started their ramp or window late.
	Late []string `json:"late"`
}

func (m *MergeInfo) line() string {
	clock := "ok"
	if m.ClockFlagged {
		clock = "FLAGGED: latencies across hosts are off by up to that much (check NTP/chrony on the generators)"
	}
	late := "none"
	if len(m.Late) > 0 {
		late = strings.Join(m.Late, "; ")
	}
	return fmt.Sprintf("%d shards of run %s (config %s); clock: max offset from the publisher %dµs, bound %dµs: %s; late shards: %s",
		m.Shards, m.RunID, m.ConfigDigest, m.MaxClockOffsetUs, m.ClockBoundUs, clock, late)
}

// runMerge is `loadtest merge [-json out] a.json b.json ...`.
func runMerge(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadtest merge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	jsonPath := fs.String("json", "", "write the merged JSON report (schema pushd.loadtest.v1) to this file")
	redisURL := fs.String("redis", "", "read the shards' reports from this Redis (where every shard stores its own) instead of files; needs -run-id")
	runID := fs.String("run-id", "", "with -redis: the run to merge")
	prefix := fs.String("prefix", "lt:", "with -redis: the run's -prefix")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: loadtest merge [-json merged.json] shard0.json shard1.json ...")
		fmt.Fprintln(stderr, "       loadtest merge [-json merged.json] -redis redis://host:6379/0 -run-id ID")
		fmt.Fprintln(stderr, "\nAdds the shards' histograms and counts exactly, then prints the table and applies the SLO\nverdict and exit codes of a single-host run. Refuses shards of different runs and missing shards.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitUsage
		}
		printErr(stderr, fmt.Errorf("%w: %w", ErrUsage, err))
		return ExitUsage
	}
	var names []string
	var docs [][]byte
	switch {
	case *redisURL != "" && (fs.NArg() > 0 || *runID == ""):
		printErr(stderr, fmt.Errorf("%w: merge -redis needs -run-id and no files", ErrUsage))
		return ExitUsage
	case *redisURL != "":
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var err error
		if names, docs, err = loadShardReports(ctx, *redisURL, *prefix, *runID); err != nil {
			printErr(stderr, err)
			return ExitUsage
		}
	case fs.NArg() == 0:
		printErr(stderr, fmt.Errorf("%w: merge needs the shards' report files (or -redis and -run-id)", ErrUsage))
		return ExitUsage
	default:
		for _, p := range fs.Args() {
			b, err := os.ReadFile(p)
			if err != nil {
				printErr(stderr, fmt.Errorf("%w: %w", ErrMerge, err))
				return ExitUsage
			}
			names, docs = append(names, p), append(docs, b)
		}
	}
	reps := make([]*Report, 0, len(docs))
	for i, b := range docs {
		r, err := decodeReport(names[i], b)
		if err != nil {
			printErr(stderr, err)
			return ExitUsage
		}
		reps = append(reps, r)
	}
	m, err := mergeReports(names, reps)
	if err != nil {
		printErr(stderr, err)
		return ExitUsage
	}
	if *jsonPath != "" {
		if werr := writeJSON(*jsonPath, m); werr != nil {
			m.decide(fmt.Errorf("-json: %w", werr))
		}
	}
	m.printHuman(stdout)
	return m.ExitCode
}

// decodeReport decodes one report; unknown fields are refused (it must
// be a loadtest report of this schema).
func decodeReport(name string, b []byte) (*Report, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var r Report
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%w: %s is not a loadtest report: %w", ErrMerge, name, err)
	}
	if r.Schema != ReportVersion {
		return nil, fmt.Errorf("%w: %s has schema %q, want %q", ErrMerge, name, r.Schema, ReportVersion)
	}
	return &r, nil
}

// mergeReports checks that reps are the shards of one run, every shard
// once, exactly one publisher, and adds them: histograms bucket by bucket
// (the merged p99 is the p99 of the merged histogram), counts by
// addition. The SLO is judged again on the merged numbers.
func mergeReports(names []string, reps []*Report) (*Report, error) {
	if len(reps) == 0 {
		return nil, fmt.Errorf("%w: no reports", ErrMerge)
	}
	for i, r := range reps {
		if r.Shard == nil {
			return nil, fmt.Errorf("%w: %s is not a shard's report (no \"shard\" section: run it with -shard i/N)", ErrMerge, names[i])
		}
	}
	first := reps[0].Shard
	n := first.Count
	if n < 1 || n > maxShards {
		return nil, fmt.Errorf("%w: %s claims %d shards (want 1..%d)", ErrMerge, names[0], n, maxShards)
	}
	holders := make([]string, n) // file holding shard i's connections
	pubIdx := -1
	for i, r := range reps {
		s := r.Shard
		switch {
		case s.RunID != first.RunID:
			return nil, fmt.Errorf("%w: %s belongs to run %q, %s to run %q", ErrMerge, names[i], s.RunID, names[0], first.RunID)
		case r.Seed != reps[0].Seed:
			return nil, fmt.Errorf("%w: %s has seed %d, %s seed %d: not one run", ErrMerge, names[i], r.Seed, names[0], reps[0].Seed)
		case s.Count != n:
			return nil, fmt.Errorf("%w: %s is a shard of %d, %s of %d", ErrMerge, names[i], s.Count, names[0], n)
		case s.ConfigDigest != first.ConfigDigest:
			return nil, fmt.Errorf("%w: %s has configuration digest %s, %s has %s: the shards were started with different flags", ErrMerge, names[i], s.ConfigDigest, names[0], first.ConfigDigest)
		}
		if s.Publishes {
			if pubIdx >= 0 {
				return nil, fmt.Errorf("%w: both %s and %s published: the run's rate would count twice", ErrMerge, names[pubIdx], names[i])
			}
			pubIdx = i
		}
		if s.Role == rolePublisher {
			continue
		}
		if s.Index < 0 || s.Index >= n {
			return nil, fmt.Errorf("%w: %s claims shard %d of %d", ErrMerge, names[i], s.Index, n)
		}
		if holders[s.Index] != "" {
			return nil, fmt.Errorf("%w: shard %d/%d appears twice (%s and %s)", ErrMerge, s.Index, n, holders[s.Index], names[i])
		}
		holders[s.Index] = names[i]
	}
	var missing []string
	for i, h := range holders {
		if h == "" {
			missing = append(missing, strconv.Itoa(i))
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: run %s has %d shards, shard(s) %s missing: merge all of them (a missing shard's connections would vanish from the counts)",
			ErrMerge, first.RunID, n, strings.Join(missing, ", "))
	}
	if pubIdx < 0 {
		return nil, fmt.Errorf("%w: no report of run %s is the publisher's (shard 0, or -role publisher)", ErrMerge, first.RunID)
	}
	pub := reps[pubIdx]

	m := &Report{Schema: ReportVersion, Seed: pub.Seed, Targets: pub.Targets, Publish: pub.Publish, Config: pub.Config,
		Requested: pub.Requested, Errors: map[string]uint64{}, CloseCodes: map[string]uint64{}, TLS: map[string]uint64{},
		PublishedPersonal: pub.PublishedPersonal, PublishedGroup: pub.PublishedGroup, PublishErrors: pub.PublishErrors,
		PublisherMaxLagMs: pub.PublisherMaxLagMs, SendSeconds: pub.SendSeconds}
	info := &MergeInfo{RunID: first.RunID, ConfigDigest: first.ConfigDigest, Shards: n, Files: names,
		ClockBoundUs: pub.Shard.MaxClockOffsetUs, Late: []string{}}
	hs := [4]*hdrhistogram.Histogram{newHist(), newHist(), newHist(), newHist()}
	var errs []string
	var stopped []string
	var userBytes, heapBytes float64
	for i, r := range reps {
		for k, enc := range []string{r.Histograms.Connect, r.Histograms.Subscribe, r.Histograms.Latency, r.Histograms.GroupLatency} {
			h, err := hdrhistogram.Decode([]byte(enc))
			if err != nil {
				return nil, fmt.Errorf("%w: %s: histogram %d: %w", ErrMerge, names[i], k, err)
			}
			if dropped := hs[k].Merge(h); dropped > 0 {
				return nil, fmt.Errorf("%w: %s: %d samples outside the histogram's range", ErrMerge, names[i], dropped)
			}
		}
		m.Held += r.Held
		m.Failed += r.Failed
		m.OpenAtEnd += r.OpenAtEnd
		m.Reconnects += r.Reconnects
		m.NotStarted += r.NotStarted
		m.PeakOpen += r.PeakOpen
		m.Expected += r.Expected
		m.Delivered += r.Delivered
		m.Duplicates += r.Duplicates
		m.Gaps += r.Gaps
		addMap(m.Errors, r.Errors)
		addMap(m.CloseCodes, r.CloseCodes)
		addMap(m.TLS, r.TLS)
		m.Workers += r.Workers
		m.CPUSeconds += r.CPUSeconds
		m.RSSBytes += r.RSSBytes
		userBytes += r.UserBytesPerConn * float64(r.Held)
		heapBytes += r.HeapBytesPerConn * float64(r.Held)
		m.ConnStructBytes = r.ConnStructBytes
		m.RampSeconds = max(m.RampSeconds, r.RampSeconds)
		m.WindowSeconds = max(m.WindowSeconds, r.WindowSeconds)
		m.Partial = m.Partial || r.Partial
		label := fmt.Sprintf("shard %d", r.Shard.Index)
		if r.Shard.Role == rolePublisher {
			label = "publisher"
		}
		if r.Error != "" {
			errs = append(errs, label+": "+r.Error)
		}
		if r.RampStoppedBy != "" {
			stopped = append(stopped, label+": "+r.RampStoppedBy)
		}
		if r.Shard.LateMs > 0 || r.Shard.WindowLateMs > 0 {
			info.Late = append(info.Late, fmt.Sprintf("%s ramp +%.0f ms, window +%.0f ms", label, r.Shard.LateMs, r.Shard.WindowLateMs))
		}
		d := r.Shard.ClockOffsetUs - pub.Shard.ClockOffsetUs
		info.MaxClockOffsetUs = max(info.MaxClockOffsetUs, d, -d)
	}
	info.ClockFlagged = info.MaxClockOffsetUs > info.ClockBoundUs
	if m.Held > 0 {
		m.UserBytesPerConn, m.HeapBytesPerConn = userBytes/float64(m.Held), heapBytes/float64(m.Held)
	}
	m.RampStoppedBy = strings.Join(stopped, "; ")
	m.Error = strings.Join(errs, "; ")
	m.setRates()
	m.setLatencies(hs[0], hs[1], hs[2], hs[3])
	m.Merged = info
	// The same judgement as a single-host run: thresholds from the run's
	// configuration (part of the digest, so the same on every shard).
	m.judge(time.Duration(pub.SLO.MaxP99Us)*time.Microsecond, pub.SLO.MinDelivery)
	var runErr error
	if m.Partial || m.Error != "" {
		runErr = errors.New(m.Error)
		if m.Error == "" {
			runErr = errors.New("a shard's report is partial")
		}
	}
	m.decide(runErr)
	sort.Strings(info.Late)
	return m, nil
}
