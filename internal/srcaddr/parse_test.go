package srcaddr

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
)

func TestParseList(t *testing.T) {
	tests := []struct {
		in          string
		n           int
		first, last string
		err         error
	}{
		{in: "127.0.0.1", n: 1, first: "127.0.0.1", last: "127.0.0.1"},
		{in: "127.0.1.0/24", n: 254, first: "127.0.1.1", last: "127.0.1.254"},
		{in: "127.0.1.0/24,127.0.2.1", n: 255, first: "127.0.1.1", last: "127.0.2.1"},
		{in: " 127.0.2.1 , 127.0.2.1,,127.0.2.2 ", n: 2, first: "127.0.2.1", last: "127.0.2.2"},
		{in: "127.0.1.7/24", n: 254, first: "127.0.1.1", last: "127.0.1.254"}, // masked
		{in: "127.0.5.4/30", n: 2, first: "127.0.5.5", last: "127.0.5.6"},
		{in: "127.0.5.4/31", n: 2, first: "127.0.5.4", last: "127.0.5.5"},
		{in: "127.0.5.4/32", n: 1, first: "127.0.5.4", last: "127.0.5.4"},
		{in: "127.1.0.0/16", n: 65534, first: "127.1.0.1", last: "127.1.255.254"},
		{in: "::1", n: 1, first: "::1", last: "::1"},
		{in: "fd00::/126", n: 4, first: "fd00::", last: "fd00::3"},
		{in: "::ffff:127.0.0.1", n: 1, first: "127.0.0.1", last: "127.0.0.1"},
		{in: "", err: ErrEmpty},
		{in: " , ", err: ErrEmpty},
		{in: "127.0.0.256", err: ErrBadAddr},
		{in: "127.0.0.0/33", err: ErrBadAddr},
		{in: "localhost", err: ErrBadAddr},
		{in: "127.0.0.0/8", err: ErrTooMany},
		{in: "127.1.0.0/16,127.2.0.0/16", err: ErrTooMany},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseList(tc.in)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("ParseList(%q) error = %v, want %v", tc.in, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseList(%q): %v", tc.in, err)
			}
			if len(got) != tc.n {
				t.Fatalf("ParseList(%q) = %d addrs, want %d", tc.in, len(got), tc.n)
			}
			if got[0] != netip.MustParseAddr(tc.first) || got[len(got)-1] != netip.MustParseAddr(tc.last) {
				t.Fatalf("ParseList(%q) = %v..%v, want %s..%s", tc.in, got[0], got[len(got)-1], tc.first, tc.last)
			}
		})
	}
}

func ExampleParseList() {
	addrs, err := ParseList("127.0.1.0/30,127.0.2.1")
	if err != nil {
		panic(err)
	}
	fmt.Println(addrs)
	// Output: [127.0.1.1 127.0.1.2 127.0.2.1]
}
