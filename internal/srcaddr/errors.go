package srcaddr

import "errors"

// Sentinel errors returned (wrapped) by this package; match with errors.Is.
var (
	// ErrEmpty means a source list had no usable address.
	ErrEmpty = errors.New("srcaddr: empty address list")
	// ErrBadAddr means an entry was neither an IP address nor a CIDR prefix.
	ErrBadAddr = errors.New("srcaddr: bad address or prefix")
	// ErrTooMany means a list expands to more than MaxAddrs addresses.
	ErrTooMany = errors.New("srcaddr: too many addresses")
	// ErrFamily means a source address cannot reach the destination's
	// address family (IPv4 source, IPv6 destination or the reverse).
	ErrFamily = errors.New("srcaddr: source and destination address families differ")
)
