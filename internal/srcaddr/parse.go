package srcaddr

import (
	"fmt"
	"net/netip"
	"strings"
)

// MaxAddrs bounds how many addresses one list may expand to, so that a typo
// such as "127.0.0.0/8" fails instead of allocating 16 million entries.
const MaxAddrs = 1 << 16

// ParseList parses a comma-separated list of IP addresses and CIDR prefixes,
// e.g. "127.0.1.0/24, 127.0.2.1". A prefix expands to its host addresses:
// for IPv4 prefixes of /30 and shorter the network and all-ones addresses
// are left out (as in most tooling); /31, /32 and IPv6 prefixes expand to
// every address. Duplicates are removed, the order of first appearance is
// kept. Spaces around entries are ignored; empty entries are skipped.
func ParseList(s string) ([]netip.Addr, error) {
	var out []netip.Addr
	seen := make(map[netip.Addr]struct{})
	add := func(a netip.Addr) error {
		if _, dup := seen[a]; dup {
			return nil
		}
		if len(out) >= MaxAddrs {
			return fmt.Errorf("%w: %q expands to more than %d", ErrTooMany, s, MaxAddrs)
		}
		seen[a] = struct{}{}
		out = append(out, a)
		return nil
	}
	for _, field := range strings.Split(s, ",") {
		field = strings.TrimSpace(field)
		if field == "" {
			continue
		}
		if !strings.Contains(field, "/") {
			a, err := netip.ParseAddr(field)
			if err != nil {
				return nil, fmt.Errorf("%w: %q: %v", ErrBadAddr, field, err)
			}
			if err := add(a.Unmap()); err != nil {
				return nil, err
			}
			continue
		}
		p, err := netip.ParsePrefix(field)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %v", ErrBadAddr, field, err)
		}
		if err := expand(p.Masked(), add); err != nil {
			return nil, err
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %q", ErrEmpty, s)
	}
	return out, nil
}

// expand calls add for every host address of p (see ParseList).
func expand(p netip.Prefix, add func(netip.Addr) error) error {
	hostBits := p.Addr().BitLen() - p.Bits()
	if hostBits > 16 {
		return fmt.Errorf("%w: %s has 2^%d addresses (max %d)", ErrTooMany, p, hostBits, MaxAddrs)
	}
	n := 1 << hostBits
	first, last := 0, n-1
	if p.Addr().Is4() && hostBits >= 2 {
		first, last = 1, n-2 // skip network and all-ones addresses
	}
	a := p.Addr()
	for i := 0; i < first; i++ {
		a = a.Next()
	}
	for i := first; i <= last; i++ {
		if err := add(a); err != nil {
			return err
		}
		a = a.Next()
	}
	return nil
}
