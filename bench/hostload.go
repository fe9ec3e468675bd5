package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// noisyLoad is the load above which a run is marked noisy: on this 2-core
// host, more runnable threads than that means the servers and clients under
// test shared the CPU with other work.
const noisyLoad = 1.5

// loadAvg returns the host's 1-minute load average and the three averages
// as text ("1.23 0.98 0.70"); -1 when /proc/loadavg is unreadable.
func loadAvg() (float64, string) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1, "unknown (" + err.Error() + ")"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return -1, "unknown"
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1, "unknown"
	}
	return v, strings.Join(f[:3], " ")
}

// otherLoad samples, while a scenario runs, how many runnable threads on
// the host belong to other processes: /proc/stat procs_running minus the
// runnable threads of bench's own process group (bench, the servers and
// the clients it starts share it) and of kernel threads, which mostly carry
// the run's own loopback traffic. The load average cannot tell these apart:
// at the end of a run it includes the run itself.
type otherLoad struct {
	mu      sync.Mutex
	samples int
	sum     int
	max     int
}

// run samples every interval until ctx ends.
func (o *otherLoad) run(ctx context.Context, interval time.Duration) {
	pgrp := syscall.Getpgrp()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if n, ok := othersRunnable(pgrp); ok {
			o.mu.Lock()
			o.samples++
			o.sum += n
			o.max = max(o.max, n)
			o.mu.Unlock()
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// result returns the mean and max of the samples (mean -1: none).
func (o *otherLoad) result() (mean float64, maxN, samples int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.samples == 0 {
		return -1, 0, 0
	}
	return float64(o.sum) / float64(o.samples), o.max, o.samples
}

// othersRunnable returns procs_running minus the runnable threads of
// process group pgrp.
func othersRunnable(pgrp int) (int, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	running := -1
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("procs_running ")); ok {
			running, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
		}
	}
	if running < 0 {
		return 0, false
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	ours := 0
	for _, p := range procs {
		st, ok := statFields(p)
		if !ok || len(st) < 3 {
			continue
		}
		// Kernel threads (children of kthreadd, pid 2) are counted as
		// ours: ksoftirqd and kworkers mostly carry the run's own loopback
		// traffic.
		if g, _ := strconv.Atoi(st[2]); g != pgrp && st[1] != "2" && !strings.HasSuffix(filepath.Dir(p), "/2") { // fields 4, 5: ppid, pgrp
			continue
		}
		tasks, _ := filepath.Glob(filepath.Join(filepath.Dir(p), "task", "*", "stat"))
		for _, tp := range tasks {
			if tf, ok := statFields(tp); ok && tf[0] == "R" {
				ours++
			}
		}
	}
	// The sampler itself is runnable while it reads /proc/stat.
	return max(running-ours, 0), true
}

// statFields returns the fields of a /proc stat file after the comm field
// (state first).
func statFields(path string) ([]string, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, false
	}
	f := strings.Fields(string(b[i+1:]))
	return f, len(f) > 0
}

// noiseNote describes the host load around a run and reports whether the
// run was noisy: a 1-minute load average above noisyLoad at the start, or
// other processes' runnable threads averaging above noisyLoad during it.
func noiseNote(loadStart float64, startText, endText string, o *otherLoad) (string, bool) {
	mean, maxN, samples := o.result()
	noisy := loadStart > noisyLoad || mean > noisyLoad
	s := fmt.Sprintf("host load average (1, 5, 15 min): start %s, end %s (the end figure includes this run's own processes)", startText, endText)
	if samples > 0 {
		s += fmt.Sprintf("; other processes' runnable threads during the run: mean %.2f, max %d (%d samples)", mean, maxN, samples)
	}
	if noisy {
		s += fmt.Sprintf(" — NOISY (above %.1f: other processes competed for the CPU; discount the timings)", noisyLoad)
	}
	return s, noisy
}
