package redistest

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// SentinelGroup is a primary, its replicas and the sentinels that monitor
// it under one master name.
type SentinelGroup struct {
	Master    string
	Primary   *Server
	Replicas  []*Server
	Sentinels []*Server
}

// SentinelOptions tune StartSentinels.
type SentinelOptions struct {
	Master    string        // the master name (default "mymaster")
	Replicas  int           // default 1
	Sentinels int           // default 3 (quorum: a majority)
	DownAfter time.Duration // down-after-milliseconds (default 1 s)
	// FailoverTimeout is failover-timeout (default 3 s).
	FailoverTimeout time.Duration
}

// StartSentinels starts a primary, replicas that replicate it and
// sentinels (redis-server --sentinel, the same program as redis-sentinel)
// that monitor it, each on its own free loopback port, and waits until
// every replica is in sync and every sentinel sees the replicas and the
// other sentinels.
func StartSentinels(tb testing.TB, o SentinelOptions) *SentinelGroup {
	tb.Helper()
	if o.Master == "" {
		o.Master = "mymaster"
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Sentinels == 0 {
		o.Sentinels = 3
	}
	if o.DownAfter == 0 {
		o.DownAfter = time.Second
	}
	if o.FailoverTimeout == 0 {
		o.FailoverTimeout = 3 * time.Second
	}
	g := &SentinelGroup{Master: o.Master, Primary: Start(tb, Options{})}
	for range o.Replicas {
		g.Replicas = append(g.Replicas, Start(tb, Options{Args: []string{"--replicaof", "127.0.0.1", strconv.Itoa(g.Primary.Port)}}))
	}
	conf := fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d %d\n"+
		"sentinel down-after-milliseconds %s %d\n"+
		"sentinel failover-timeout %s %d\n"+
		"sentinel parallel-syncs %s 1\n",
		o.Master, g.Primary.Port, o.Sentinels/2+1,
		o.Master, o.DownAfter.Milliseconds(),
		o.Master, o.FailoverTimeout.Milliseconds(),
		o.Master)
	for range o.Sentinels {
		g.Sentinels = append(g.Sentinels, Start(tb, Options{SentinelConf: conf}))
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, r := range g.Replicas {
		for {
			info, _ := r.Do("INFO", "replication")
			if strings.Contains(info, "master_link_status:up") {
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("replica %s not in sync: %s", r.Addr, info)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, s := range g.Sentinels {
		for {
			out, _ := s.Do("SENTINEL", "MASTER", o.Master)
			if sentinelField(out, "num-slaves") == strconv.Itoa(o.Replicas) &&
				sentinelField(out, "num-other-sentinels") == strconv.Itoa(o.Sentinels-1) {
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("sentinel %s does not see the group yet: %s", s.Addr, out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return g
}

// SentinelAddrs returns the sentinels' host:port addresses.
func (g *SentinelGroup) SentinelAddrs() []string {
	out := make([]string, len(g.Sentinels))
	for i, s := range g.Sentinels {
		out[i] = s.Addr
	}
	return out
}

// MasterAddr asks the first sentinel that answers for the current
// primary's address.
func (g *SentinelGroup) MasterAddr() string {
	for _, s := range g.Sentinels {
		out, err := s.Do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", g.Master)
		if f := strings.Fields(out); err == nil && len(f) == 2 {
			return f[0] + ":" + f[1]
		}
	}
	return ""
}

// sentinelField finds key's value in redis-cli's one-item-per-line
// rendering of a SENTINEL MASTER reply (key, value, key, value, ...).
func sentinelField(out, key string) string {
	lines := strings.Split(out, "\n")
	for i := 0; i+1 < len(lines); i++ {
		if strings.TrimSpace(lines[i]) == key {
			return strings.TrimSpace(lines[i+1])
		}
	}
	return ""
}
