package main

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// ReportVersion is the schema version of Report (the "schema" field).
const ReportVersion = "pushd.loadtest.v1"

// Report is the JSON document written by -json (schema "pushd.loadtest.v1",
// documented in doc.go). Latencies are in microseconds. Counts are totals
// over all worker processes.
type Report struct {
	Schema  string   `json:"schema"`
	Seed    uint64   `json:"seed"`
	Partial bool     `json:"partial"` // interrupted (SIGINT) or a run error: numbers cover what ran
	Error   string   `json:"error,omitempty"`
	Targets []string `json:"targets"`
	Publish string   `json:"publish"` // "redis PUBLISH", "redis FCALL" or "http POST"

	Config ReportConfig `json:"config"`

	// Connections.
	Requested   int     `json:"conns_requested"`
	Held        int64   `json:"conns_held"`     // open when the measured window began
	Failed      int64   `json:"conns_failed"`   // gave up after -max-attempts
	OpenAtEnd   int64   `json:"conns_open_end"` // open when the run stopped
	Reconnects  uint64  `json:"reconnects"`
	RampSeconds float64 `json:"ramp_seconds"`
	// RampStoppedBy is empty when every connection was started, else why
	// the ramp ended early: "ramp-timeout ...", "memory: ...", "SIGUSR1",
	// "interrupted".
	RampStoppedBy string `json:"ramp_stopped_by"`
	NotStarted    int64  `json:"conns_not_started"` // never dialed (the ramp ended first)
	PeakOpen      int64  `json:"conns_peak"`        // most connections open at once (sampled every 250 ms)

	ConnectLatency   Percentiles `json:"connect_latency_us"`   // connect(2) start → 101
	SubscribeLatency Percentiles `json:"subscribe_latency_us"` // 101 → pong (URL subscriptions live)
	Latency          Percentiles `json:"latency_us"`           // personal publish (scheduled) → receive
	GroupLatency     Percentiles `json:"group_latency_us"`     // group publish (scheduled) → receive

	// Delivery over the connections held when the window began.
	PublishedPersonal uint64            `json:"published_personal"`
	PublishedGroup    uint64            `json:"published_group"`
	PublishErrors     map[string]uint64 `json:"publish_errors"`
	PublisherMaxLagMs float64           `json:"publisher_max_lag_ms"`
	Expected          uint64            `json:"expected"`  // deliveries owed to held connections
	Delivered         uint64            `json:"delivered"` // unique deliveries received
	Duplicates        uint64            `json:"duplicates"`
	Gaps              uint64            `json:"gaps"` // sequence numbers skipped (seen later ones first)
	Lost              uint64            `json:"lost"` // expected - delivered
	DeliveryRatio     float64           `json:"delivery_ratio"`
	MsgsPerSec        float64           `json:"msgs_per_sec"`      // deliveries per second of the send window
	PublishedPerSec   float64           `json:"published_per_sec"` // publications per second of the send window
	SendSeconds       float64           `json:"send_seconds"`      // the publishing (send) window
	WindowSeconds     float64           `json:"window_seconds"`    // send window plus drain

	Errors     map[string]uint64 `json:"errors"`      // by class: errno name, timeout_*, handshake_status_N, close_N, ...
	CloseCodes map[string]uint64 `json:"close_codes"` // close frames received, by code
	// TLS counts wss handshakes by version ("TLS 1.3") and "resumed";
	// empty for ws:// targets.
	TLS map[string]uint64 `json:"tls,omitempty"`

	// The generator itself.
	Workers          int     `json:"workers"`
	CPUSeconds       float64 `json:"cpu_seconds"`         // all processes, user+sys
	RSSBytes         uint64  `json:"rss_bytes"`           // sum of worker RSS at the start of the window
	UserBytesPerConn float64 `json:"user_bytes_per_conn"` // (RSS at window start - RSS before dialing) / held, per worker, summed
	HeapBytesPerConn float64 `json:"heap_bytes_per_conn"` // same with Go heap+stacks in use
	ConnStructBytes  int     `json:"conn_struct_bytes"`

	// Histograms are the four latency histograms, HDR V2 compressed and
	// base64 encoded (hdrhistogram.Decode reads them): what `loadtest
	// merge` adds exactly.
	Histograms Histograms `json:"histograms"`
	// Shard describes a sharded run's shard (-shard); nil otherwise.
	Shard *ShardInfo `json:"shard,omitempty"`
	// Merged describes a report made by `loadtest merge`; nil otherwise.
	Merged *MergeInfo `json:"merged,omitempty"`

	SLO SLOResult `json:"slo"`
	// ExitCode is the command's exit status and Verdict says it in words;
	// the report's SLO line prints the same.
	ExitCode int    `json:"exit_code"`
	Verdict  string `json:"verdict"`
}

// ReportConfig echoes the run's parameters.
type ReportConfig struct {
	Conns     int     `json:"conns"`
	Ramp      float64 `json:"ramp_per_sec"`
	Rate      float64 `json:"rate_per_sec"`
	GroupRate float64 `json:"group_rate_per_sec"`
	Groups    int     `json:"groups"`
	DurationS float64 `json:"duration_seconds"`
	Sources   int     `json:"sources"`
	Loops     int     `json:"loops_per_worker"`
}

// Percentiles summarises one HDR histogram (microseconds).
type Percentiles struct {
	Count int64   `json:"count"`
	Min   int64   `json:"min"`
	Mean  float64 `json:"mean"`
	P50   int64   `json:"p50"`
	P90   int64   `json:"p90"`
	P99   int64   `json:"p99"`
	P999  int64   `json:"p999"`
	Max   int64   `json:"max"`
}

func percentiles(h *hdrhistogram.Histogram) Percentiles {
	if h.TotalCount() == 0 {
		return Percentiles{}
	}
	return Percentiles{
		Count: h.TotalCount(), Min: h.Min(), Mean: h.Mean(),
		P50: h.ValueAtQuantile(50), P90: h.ValueAtQuantile(90), P99: h.ValueAtQuantile(99),
		P999: h.ValueAtQuantile(99.9), Max: h.Max(),
	}
}

// SLOResult is the verdict against -max-p99 and -min-delivery.
type SLOResult struct {
	MaxP99Us    int64    `json:"max_p99_us,omitempty"`
	MinDelivery float64  `json:"min_delivery,omitempty"`
	Breaches    []string `json:"breaches"`
	OK          bool     `json:"ok"`
}

// decide sets ExitCode and Verdict from the SLO verdict and the run's
// error: a breach is exit 3 (even on a partial run: the breach is real),
// else a failed or interrupted run is exit 1 and never "OK", else 0.
func (r *Report) decide(runErr error) {
	switch {
	case !r.SLO.OK:
		r.ExitCode = ExitSLOBreach
		r.Verdict = fmt.Sprintf("BREACHED (exit %d): %s", ExitSLOBreach, strings.Join(r.SLO.Breaches, "; "))
	case runErr != nil:
		r.ExitCode = ExitRunError
		r.Verdict = fmt.Sprintf("NOT JUDGED (exit %d): the run failed: %v", ExitRunError, runErr)
	default:
		r.ExitCode = ExitOK
		r.Verdict = fmt.Sprintf("OK (exit %d)", ExitOK)
	}
}

// Histograms holds encoded HDR histograms (microseconds).
type Histograms struct {
	Connect      string `json:"connect"`
	Subscribe    string `json:"subscribe"`
	Latency      string `json:"latency"`
	GroupLatency string `json:"group_latency"`
}

// encodeHist encodes h as HDR V2 compressed, base64.
func encodeHist(h *hdrhistogram.Histogram) string {
	b, err := h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil { // only for an unknown version
		panic(err)
	}
	return string(b)
}

// setLatencies fills the percentiles and the encoded histograms.
func (r *Report) setLatencies(c, s, lat, glat *hdrhistogram.Histogram) {
	r.ConnectLatency, r.SubscribeLatency = percentiles(c), percentiles(s)
	r.Latency, r.GroupLatency = percentiles(lat), percentiles(glat)
	r.Histograms = Histograms{Connect: encodeHist(c), Subscribe: encodeHist(s), Latency: encodeHist(lat), GroupLatency: encodeHist(glat)}
}

// setRates computes the ratios from the counts.
func (r *Report) setRates() {
	r.Lost = 0
	if r.Expected > r.Delivered {
		r.Lost = r.Expected - r.Delivered
	}
	r.DeliveryRatio = 0
	if r.Expected > 0 {
		r.DeliveryRatio = float64(r.Delivered) / float64(r.Expected)
	}
	// Rates are over the send window: the drain after it only collects
	// what was sent in it, and the ramp before it sends nothing.
	if r.SendSeconds > 0 {
		r.MsgsPerSec = float64(r.Delivered) / r.SendSeconds
		r.PublishedPerSec = float64(r.PublishedPersonal+r.PublishedGroup) / r.SendSeconds
	}
}

// merge folds worker results into r.
func (r *Report) merge(res []workerResult) {
	c, s, lat, glat := newHist(), newHist(), newHist(), newHist()
	r.Errors, r.CloseCodes, r.TLS = map[string]uint64{}, map[string]uint64{}, map[string]uint64{}
	var delivered uint64
	for _, w := range res {
		for _, p := range []struct {
			dst *hdrhistogram.Histogram
			src *hdrhistogram.Snapshot
		}{{c, w.Connect}, {s, w.Subscribe}, {lat, w.Latency}, {glat, w.GroupLatency}} {
			if p.src != nil {
				p.dst.Merge(hdrhistogram.Import(p.src))
			}
		}
		r.Held += w.Measured
		r.Failed += w.Dead
		r.OpenAtEnd += w.Open
		r.NotStarted += int64(w.Conns) - w.Started
		r.Reconnects += w.Reconnects
		r.Expected += w.ExpectedU + w.ExpectedG
		delivered += w.UniqueU + w.UniqueG
		r.Duplicates += w.Dups
		r.Gaps += w.Gaps
		addMap(r.Errors, w.Errors)
		addMap(r.CloseCodes, w.CloseCodes)
		addMap(r.TLS, w.TLS)
		r.CPUSeconds += w.CPUSeconds
		r.RSSBytes += w.RSSBytes
		if w.HeldAtPeak > 0 {
			r.UserBytesPerConn += float64(int64(w.RSSBytes) - int64(w.BaseRSS))
			r.HeapBytesPerConn += float64(int64(w.HeapBytes) - int64(w.BaseHeap))
		}
	}
	var held int64
	for _, w := range res {
		held += w.HeldAtPeak
	}
	if held > 0 { // bytes summed over workers, divided by everything held
		r.UserBytesPerConn /= float64(held)
		r.HeapBytesPerConn /= float64(held)
	}
	r.Delivered = delivered
	r.setRates()
	r.setLatencies(c, s, lat, glat)
	r.ConnStructBytes = connStructBytes
}

// judge fills r.SLO. A threshold of 0 is off. No deliveries expected with
// -min-delivery set is a breach: an SLO cannot pass on no evidence.
func (r *Report) judge(maxP99 time.Duration, minDelivery float64) {
	r.SLO = SLOResult{MaxP99Us: maxP99.Microseconds(), MinDelivery: minDelivery, Breaches: []string{}}
	if maxP99 > 0 {
		p99 := max(r.Latency.P99, r.GroupLatency.P99)
		if r.Latency.Count+r.GroupLatency.Count == 0 {
			r.SLO.Breaches = append(r.SLO.Breaches, "p99: no latency samples")
		} else if p99 > maxP99.Microseconds() {
			r.SLO.Breaches = append(r.SLO.Breaches, fmt.Sprintf("p99 %v > %v", time.Duration(p99)*time.Microsecond, maxP99))
		}
	}
	if minDelivery > 0 {
		if r.Expected == 0 {
			r.SLO.Breaches = append(r.SLO.Breaches, "delivery: nothing was expected (no held connections or no publications)")
		} else if r.DeliveryRatio < minDelivery {
			r.SLO.Breaches = append(r.SLO.Breaches, fmt.Sprintf("delivery ratio %.6f < %.6f", r.DeliveryRatio, minDelivery))
		}
	}
	r.SLO.OK = len(r.SLO.Breaches) == 0
}

func us(v int64) string { return (time.Duration(v) * time.Microsecond).String() }

// printHuman writes the final table.
func (r *Report) printHuman(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	title := "loadtest report"
	if r.Partial {
		title += " (PARTIAL)"
	}
	fmt.Fprintf(tw, "%s\tseed %d, %d worker(s), publish via %s\n", title, r.Seed, r.Workers, r.Publish)
	fmt.Fprintf(tw, "connections\trequested %d, peak %d, held %d, failed %d, not started %d, open at end %d, reconnects %d, ramp %.1fs\n",
		r.Requested, r.PeakOpen, r.Held, r.Failed, r.NotStarted, r.OpenAtEnd, r.Reconnects, r.RampSeconds)
	if r.RampStoppedBy != "" {
		fmt.Fprintf(tw, "ramp stopped by\t%s\n", r.RampStoppedBy)
	}
	fmt.Fprintf(tw, "\tcount\tp50\tp90\tp99\tp99.9\tmax\n")
	for _, row := range []struct {
		name string
		p    Percentiles
	}{{"connect", r.ConnectLatency}, {"subscribe", r.SubscribeLatency}, {"latency personal", r.Latency}, {"latency group", r.GroupLatency}} {
		if row.p.Count == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", row.name, row.p.Count, us(row.p.P50), us(row.p.P90), us(row.p.P99), us(row.p.P999), us(row.p.Max))
	}
	fmt.Fprintf(tw, "published\tpersonal %d, group %d in a %.1fs send window, %.0f/s (then %.1fs drain; publisher max lag %.1f ms)\n",
		r.PublishedPersonal, r.PublishedGroup, r.SendSeconds, r.PublishedPerSec, r.WindowSeconds-r.SendSeconds, r.PublisherMaxLagMs)
	fmt.Fprintf(tw, "delivery\tratio %.6f: %d of %d delivered, %d lost, %d duplicates, %d gaps, %.0f msg/s\n",
		r.DeliveryRatio, r.Delivered, r.Expected, r.Lost, r.Duplicates, r.Gaps, r.MsgsPerSec)
	fmt.Fprintf(tw, "errors\t%s\n", fmtMap(r.Errors))
	if line := r.tlsLine(); line != "" {
		fmt.Fprintf(tw, "tls\t%s\n", line)
	}
	if len(r.PublishErrors) > 0 {
		fmt.Fprintf(tw, "publish errors\t%s\n", fmtMap(r.PublishErrors))
	}
	fmt.Fprintf(tw, "generator\tCPU %.1fs, RSS %.1f MiB, %.0f B/conn user space (RSS), %.0f B/conn Go heap, conn struct %d B\n",
		r.CPUSeconds, float64(r.RSSBytes)/(1<<20), r.UserBytesPerConn, r.HeapBytesPerConn, r.ConnStructBytes)
	if sh := r.Shard; sh != nil {
		fmt.Fprintf(tw, "shard\t%s\n", sh.line())
	}
	if m := r.Merged; m != nil {
		fmt.Fprintf(tw, "merged\t%s\n", m.line())
	}
	fmt.Fprintf(tw, "SLO\t%s\n", r.Verdict)
	tw.Flush()
}

func fmtMap(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range slices.Compact(keys) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}
