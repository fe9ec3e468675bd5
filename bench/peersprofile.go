package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Profiles of the pushd rows in the peers scenario. They are taken after
// (or beside) the measured windows, never during them, so the profiler's
// cost is in no number of the table. The results file quotes those of the
// columns pushd does not lead.

// profileKinds maps each column of the table to the profiles that explain
// it.
func profileKinds(column string) []string {
	switch column {
	case "bytes/idle conn (RSS slope)":
		return []string{"heap"}
	case "goroutines @top", "threads @top":
		return []string{"goroutines"}
	case "deliveries/s", "÷ raw write()", "CPU s / 1M deliveries":
		return []string{"broadcast"}
	case "p50 ms", "p99 ms":
		return []string{"latency"}
	case "conns/s (ramp)":
		return []string{"ramp"}
	}
	return nil
}

// profiling reports whether def's row gets profiles.
func (p *peersRun) profiling(def peerDef) bool {
	return def.kind == "pushd" && p.f.profile != "never"
}

// keepProfile stores a profile's text under kind, headed by what, or logs
// why there is none.
func (p *peersRun) keepProfile(res *peerResult, kind, what, text string, err error) {
	if err != nil {
		p.h.logf("%s %s profile: %v", res.Name, kind, err)
		return
	}
	if res.Profiles == nil {
		res.Profiles = map[string]string{}
	}
	res.Profiles[kind] = what + ":\n" + text
}

// profileWhile takes a CPU profile of srv for seconds (saved as file)
// while work runs, and returns its top.
func (p *peersRun) profileWhile(ctx context.Context, srv *serverProc, file string, seconds int, work func() error) (string, error) {
	type result struct {
		top string
		err error
	}
	done := make(chan result, 1)
	go func() {
		top, err := p.h.profileTop(ctx, srv, fmt.Sprintf("/debug/pprof/profile?seconds=%d", seconds), file, 30)
		done <- result{top, err}
	}()
	werr := work()
	r := <-done
	if r.err == nil {
		r.err = werr
	}
	return r.top, r.err
}

// profileLatency repeats the latency load on the open personal channels
// for -profile-seconds under the CPU profiler.
func (p *peersRun) profileLatency(ctx context.Context, srv *serverProc, def peerDef) (string, error) {
	secs := p.f.profileSecs
	total := p.f.latRate * secs
	return p.profileWhile(ctx, srv, p.f.date+"-"+def.name+"-latency-cpu.pb.gz", secs, func() error {
		if err := p.fr.client.send(clientCmd{Cmd: "collect", Total: total, Ms: int64(secs+10) * 1000}); err != nil {
			return err
		}
		if _, err := p.fr.client.expect(ctx, 30*time.Second, "collecting"); err != nil {
			return err
		}
		perr := p.publishPersonal(ctx, srv, total)
		_, err := p.fr.client.expect(ctx, time.Duration(secs+60)*time.Second, "collected")
		if perr != nil {
			return perr
		}
		return err
	})
}

// profileRamp opens the top plateau's connections again (after the
// latency phase closed its own) under the CPU profiler, then closes them.
func (p *peersRun) profileRamp(ctx context.Context, srv *serverProc, def peerDef) (string, error) {
	if err := p.closeAll(ctx, srv, def); err != nil {
		return "", err
	}
	top := p.counts[len(p.counts)-1]
	prof, err := p.profileWhile(ctx, srv, p.f.date+"-"+def.name+"-ramp-cpu.pb.gz", 3, func() error {
		open := clientCmd{Cmd: "open", Total: top, Target: srv.wsAddr, Path: "/ws?ch=" + broadcastChannel + "&format=raw", Hello: def.hello}
		if err := p.fr.client.send(open); err != nil {
			return err
		}
		ev, err := p.fr.client.expect(ctx, 5*time.Minute, "opened")
		if err == nil && ev.Open != top {
			err = fmt.Errorf("opened %d of %d connections: %v", ev.Open, top, ev.Errors)
		}
		return err
	})
	if err != nil {
		return "", err
	}
	return prof, p.closeAll(ctx, srv, def)
}

// goroutineSummary reads /debug/pprof/goroutine?debug=1 from srv's admin
// listener and returns one line per group of identical stacks: the count
// and the outermost frame (what the goroutines are for), largest first.
func goroutineSummary(ctx context.Context, srv *serverProc) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+srv.adminAddr+"/debug/pprof/goroutine?debug=1", nil)
	if err != nil {
		return "", err
	}
	resp, err := adminClient().Do(req)
	if err != nil {
		return "", fmt.Errorf("goroutine profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("goroutine profile: %s", resp.Status)
	}
	return summarizeGoroutines(resp.Body)
}

// summarizeGoroutines condenses a debug=1 goroutine profile.
func summarizeGoroutines(r io.Reader) (string, error) {
	type group struct {
		n     int
		frame string
	}
	var groups []group
	var total string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "goroutine profile: total "):
			total = strings.TrimPrefix(line, "goroutine profile: ")
		case strings.Contains(line, " @ 0x"):
			n, err := strconv.Atoi(strings.Fields(line)[0])
			if err != nil {
				return "", fmt.Errorf("goroutine profile: %q", line)
			}
			groups = append(groups, group{n: n})
		case strings.HasPrefix(line, "#") && len(groups) > 0:
			// Frames run innermost first; the last one names the
			// goroutine's job.
			if f := strings.Fields(line); len(f) >= 3 {
				groups[len(groups)-1].frame = strings.SplitN(f[2], "+0x", 2)[0]
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("goroutine profile: %w", err)
	}
	// Stacks that differ inside but end in the same frame are one job.
	var merged []group
	for _, g := range groups {
		if g.frame == "" {
			g.frame = "(runtime only)"
		}
		if i := slices.IndexFunc(merged, func(m group) bool { return m.frame == g.frame }); i >= 0 {
			merged[i].n += g.n
		} else {
			merged = append(merged, g)
		}
	}
	sort.SliceStable(merged, func(i, j int) bool { return merged[i].n > merged[j].n })
	var b strings.Builder
	b.WriteString(total + "\n")
	for _, g := range merged {
		fmt.Fprintf(&b, "%4d  %s\n", g.n, g.frame)
	}
	return b.String(), nil
}
