package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// monoClock reads CLOCK_MONOTONIC in nanoseconds through Go's monotonic
// clock (base + time.Since, no syscall). Every process on the host shares
// that clock, so a publisher in the parent stamps a payload and a worker
// process subtracts the stamp from its receive time.
type monoClock struct {
	baseTime time.Time
	baseNs   int64
}

// newMonoClock pairs a time.Now reading with CLOCK_MONOTONIC. A
// preemption between the two readings would offset this process's clock
// against the others', so it brackets time.Now between two clock_gettime
// calls, keeps the tightest of 16 tries and takes the midpoint.
func newMonoClock() (monoClock, error) {
	var best monoClock
	bestGap := int64(-1)
	for range 16 {
		var a, b unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &a); err != nil {
			return monoClock{}, fmt.Errorf("clock_gettime: %w", err)
		}
		t := time.Now()
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &b); err != nil {
			return monoClock{}, fmt.Errorf("clock_gettime: %w", err)
		}
		if gap := b.Nano() - a.Nano(); bestGap < 0 || gap < bestGap {
			bestGap = gap
			best = monoClock{baseTime: t, baseNs: a.Nano() + gap/2}
		}
	}
	return best, nil
}

// wallClock is a monoClock reading wall-clock Unix nanoseconds: the
// wall clock at construction, advanced by the monotonic clock (a step of
// the system clock during the run does not show). Generators on different
// hosts share it to the accuracy of NTP/chrony; shards measure their
// offset (shard.go).
func wallClock() monoClock {
	t := time.Now()
	return monoClock{baseTime: t, baseNs: t.UnixNano()}
}

// newClock returns the wall clock for sharded runs, else CLOCK_MONOTONIC.
func newClock(wall bool) (monoClock, error) {
	if wall {
		return wallClock(), nil
	}
	return newMonoClock()
}

func (m monoClock) now() int64 { return m.baseNs + int64(time.Since(m.baseTime)) }

// processCPU returns this process's user+sys CPU time.
func processCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// memAvailable returns the host's MemAvailable in bytes, 0 if unknown.
func memAvailable() uint64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				kb, _ := strconv.ParseUint(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// processRSS returns this process's resident set size (VmRSS), 0 if
// /proc is unreadable.
func processRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseUint(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}
