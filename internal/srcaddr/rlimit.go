package srcaddr

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Rlimit is a soft/hard resource limit pair.
type Rlimit struct {
	Soft, Hard uint64
}

// Nofile returns the process's RLIMIT_NOFILE. Note that the Go runtime
// already raises the soft limit to the hard one at start (Go ≥ 1.19) and
// restores the original soft limit for child processes it execs.
func Nofile() (Rlimit, error) {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		return Rlimit{}, fmt.Errorf("getrlimit NOFILE: %w", err)
	}
	return Rlimit{Soft: r.Cur, Hard: r.Max}, nil
}

// RaiseNofile raises the soft RLIMIT_NOFILE to the hard limit and returns the
// resulting limits. Raising the hard limit needs CAP_SYS_RESOURCE and is left
// to the operator (see Preflight's fixes).
func RaiseNofile() (Rlimit, error) {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		return Rlimit{}, fmt.Errorf("getrlimit NOFILE: %w", err)
	}
	if r.Cur < r.Max {
		r.Cur = r.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
			return Rlimit{}, fmt.Errorf("setrlimit NOFILE %d: %w", r.Max, err)
		}
	}
	return Nofile()
}
