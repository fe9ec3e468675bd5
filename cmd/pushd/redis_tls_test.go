package main_test

// Issue 18, Build 4: pushd reaches a real redis-server that speaks only
// TLS and authenticates an ACL user: the password from a file, the CA from
// -redis-tls-ca. A wrong password or an untrusted certificate keeps the
// node unready instead of falling back to anything.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/cluster/redistest"
	"github.com/pushd/pushd/internal/pushdtest"
)

func TestRedisTLSAndACL(t *testing.T) {
	pki := newTestPKI(t)
	srv := redistest.Start(t, redistest.Options{
		TLSCert: pki.certFile, TLSKey: pki.keyFile, TLSCA: pki.caFile,
		Args: []string{"--user", "pushd", "on", ">s3cret-pass", "~pushd:*", "&pushd:*", "+@all"},
	})
	dir := t.TempDir()
	pass := filepath.Join(dir, "redis-pass")
	if err := os.WriteFile(pass, []byte("s3cret-pass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	url := "rediss://" + srv.Addr + "/0"
	bin := pushdtest.Build(t) // once: a build is seconds of linking under -race
	nodes := []*pushdtest.Proc{pushdtest.Start(t, bin, pushdtest.Options{Args: []string{
		"-redis", url, "-redis-username", "pushd", "-redis-password-file", pass, "-redis-tls-ca", pki.caFile}})}
	waitReady(t, nodes[0], 200, 10*time.Second)
	c := dial(t, nodes[0], "/ws?ch=secure")
	ready(t, c)
	seq := mustPublish(t, nodes[0], "secure", `{"n":1}`)
	expectPush(t, c, "secure", seq, `{"n":1}`)
	// Every connection pushd holds is the ACL user's.
	list := srv.MustDo(t, "CLIENT", "LIST")
	pushdConns := 0
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, "cmd=client|list") {
			continue // redis-cli itself
		}
		if !strings.Contains(line, " user=pushd ") {
			t.Errorf("a connection that is not the ACL user's: %s", line)
		}
		pushdConns++
	}
	if pushdConns < 2 {
		t.Fatalf("CLIENT LIST shows %d pushd connections:\n%s", pushdConns, list)
	}
	t.Logf("TLS-only redis-server, ACL user pushd: %d connections, publish and push through it", pushdConns)

	// A wrong password, or no CA for the server's certificate: never ready.
	wrong := filepath.Join(dir, "wrong")
	if err := os.WriteFile(wrong, []byte("nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, why string
		args      []string
		p         *pushdtest.Proc
	}{
		{name: "wrong password", why: "WRONGPASS", args: []string{"-redis", url, "-redis-username", "pushd", "-redis-password-file", wrong, "-redis-tls-ca", pki.caFile}},
		{name: "untrusted CA", why: "certificate", args: []string{"-redis", url, "-redis-username", "pushd", "-redis-password-file", pass}},
	}
	for i := range cases {
		cases[i].p = pushdtest.Start(t, bin, pushdtest.Options{Args: cases[i].args})
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		for _, tc := range cases {
			if s := readyz(tc.p); s == 200 {
				t.Fatalf("%s: /readyz 200", tc.name)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, tc := range cases {
		if !strings.Contains(tc.p.Log(), tc.why) {
			t.Errorf("%s: the log does not say %q:\n%s", tc.name, tc.why, tc.p.Tail(20))
		}
		tc.p.Stop(t)
	}
}
