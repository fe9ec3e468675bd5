package poller

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// FileLimit returns the process's RLIMIT_NOFILE soft and hard limits.
func FileLimit() (soft, hard uint64, err error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, 0, fmt.Errorf("getrlimit(RLIMIT_NOFILE): %w", err)
	}
	return rl.Cur, rl.Max, nil
}

// RaiseFileLimit lifts the soft RLIMIT_NOFILE to the hard limit and returns
// the new limits. The hard limit itself cannot be raised from inside (on
// these machines it is 20,000 even for root): scale past it with more
// processes (Config.ReusePort) or more nodes.
func RaiseFileLimit() (soft, hard uint64, err error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, 0, fmt.Errorf("getrlimit(RLIMIT_NOFILE): %w", err)
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
			return 0, 0, fmt.Errorf("setrlimit(RLIMIT_NOFILE): %w", err)
		}
	}
	return rl.Cur, rl.Max, nil
}
