// Package srcaddr owns dialing very many TCP connections from one host: it
// parses source-address lists ("127.0.1.0/24,127.0.2.1"), dials from those
// addresses in round-robin order with IP_BIND_ADDRESS_NO_PORT, reads and
// raises RLIMIT_NOFILE, and checks a host's limits before a load run
// (Preflight) so a run fails early with the exact fix instead of late with
// EADDRNOTAVAIL or EMFILE.
//
// Why source addresses: one (source IP, destination) pair can carry at most
// as many connections as /proc/sys/net/ipv4/ip_local_port_range has ports.
// On Linux every 127.0.0.0/8 address is routed to lo, so a single loopback
// host can spread connections over many source IPs. Binding a source IP with
// port 0 normally reserves an ephemeral port at bind time, globally for that
// IP; IP_BIND_ADDRESS_NO_PORT defers the port choice to connect(), so the
// kernel only needs the full 4-tuple to be unique and the port range is
// spent once per (source, destination) pair instead of once per source.
//
// Concurrency: a Dialer is safe for concurrent use once built; everything
// else is a plain function. The package starts no goroutines, never logs and
// reads no environment variables; it reads /proc (Host.ProcDir) and calls
// getrlimit/setrlimit only when asked to.
//
// Hot path: Dialer.DialContext is one atomic add plus the net.Dialer dial;
// the socket option is set in net.Dialer.Control before bind(2).
package srcaddr
