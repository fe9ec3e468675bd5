package srcaddr_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/pushd/pushd/internal/srcaddr"
)

// Dial two connections to a loopback listener; each comes from the next
// source address.
func ExampleNewDialer() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	srcs, err := srcaddr.ParseList("127.0.8.1,127.0.8.2")
	if err != nil {
		panic(err)
	}
	d, err := srcaddr.NewDialer(srcs, 5*time.Second)
	if err != nil {
		panic(err)
	}
	for range 2 {
		c, err := d.DialContext(context.Background(), "tcp", ln.Addr().String())
		if err != nil {
			panic(err)
		}
		fmt.Println(c.LocalAddr().(*net.TCPAddr).IP)
		c.Close()
	}
	// Output:
	// 127.0.8.1
	// 127.0.8.2
}

// Check a 50,000-connection plan against a host whose ephemeral port range
// is 10,000 ports wide, with a single source address.
func ExampleHost_Preflight() {
	proc, err := os.MkdirTemp("", "proc")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(proc)
	for name, v := range map[string]string{
		"sys/fs/nr_open":                   "1048576",
		"sys/fs/file-max":                  "9223372036854775807",
		"sys/fs/file-nr":                   "1000 0 9223372036854775807",
		"sys/net/ipv4/ip_local_port_range": "50000 59999",
	} {
		p := filepath.Join(proc, name)
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		_ = os.WriteFile(p, []byte(v+"\n"), 0o644)
	}
	h := srcaddr.Host{
		ProcDir: proc,
		Nofile:  func() (srcaddr.Rlimit, error) { return srcaddr.Rlimit{Soft: 1 << 20, Hard: 1 << 20}, nil },
	}
	for _, p := range h.Preflight(srcaddr.Plan{Conns: 50000, Sources: 1, Destinations: 1}) {
		fmt.Println(p.Severity, p.Check)
		fmt.Println(p.Fix)
	}
	// Output:
	// fail net.ipv4.ip_local_port_range
	// use at least 5 source addresses (e.g. 127.0.1.0/24 gives 254) with IP_BIND_ADDRESS_NO_PORT, or as root: `sysctl -w net.ipv4.ip_local_port_range="1024 65535"`
}
