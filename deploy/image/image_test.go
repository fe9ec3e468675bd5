package main

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestImageTarball builds the image to a tarball exactly as the command
// does, reads it back with go-containerregistry's tarball reader (as
// docker load would) and checks the config (entrypoint, a non-root user
// that /etc/passwd in the image names, exposed ports, stop signal) and
// the filesystem: the entrypoint is a static ELF for the image's
// architecture, and it runs and prints its version.
func TestImageTarball(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out := filepath.Join(t.TempDir(), "pushd.tar")
	var stdout, stderr bytes.Buffer
	start := time.Now()
	if err := run(ctx, []string{"-o", out, "-tag", "example.com/pushd:test"}, &stdout, &stderr); err != nil {
		t.Fatalf("image -o: %v\n%s", err, stderr.Bytes())
	}
	t.Logf("%s(built in %v)", stdout.Bytes(), time.Since(start).Round(time.Millisecond))

	tag, err := name.NewTag("example.com/pushd:test")
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatalf("read the tarball back: %v", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	t.Logf("config: os %s arch %s entrypoint %q cmd %q user %q ports %v", cf.OS, cf.Architecture, c.Entrypoint, c.Cmd, c.User, c.ExposedPorts)
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
	}
	if !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/pushd"}) {
		t.Errorf("entrypoint %q", c.Entrypoint)
	}
	uid, _, _ := strings.Cut(c.User, ":")
	if uid == "" || uid == "0" || uid == "root" {
		t.Errorf("user %q: the image must not run as root", c.User)
	}
	for _, p := range []string{"8080/tcp", "9090/tcp"} {
		if _, ok := c.ExposedPorts[p]; !ok {
			t.Errorf("port %s not exposed: %v", p, c.ExposedPorts)
		}
	}
	if len(c.ExposedPorts) != 2 {
		t.Errorf("exposed ports %v, want exactly 8080/tcp and 9090/tcp", c.ExposedPorts)
	}
	if c.StopSignal != "SIGTERM" {
		t.Errorf("stop signal %q", c.StopSignal)
	}
	if !slices.Contains(c.Cmd, "0.0.0.0:8080") || !slices.Contains(c.Cmd, "0.0.0.0:9090") {
		t.Errorf("cmd %q does not listen on the exposed ports", c.Cmd)
	}

	files := extract(t, img)
	passwd := string(files["etc/passwd"].body)
	if !strings.Contains(passwd, "nonroot:x:"+uid+":") {
		t.Errorf("/etc/passwd has no user with uid %s:\n%s", uid, passwd)
	}
	if h := files["home/nonroot"].hdr; h == nil || strconv.Itoa(h.Uid) != uid {
		t.Errorf("home of the user: %+v", h)
	}
	exe := files["usr/local/bin/pushd"]
	if exe.hdr == nil || exe.hdr.Mode&0o111 == 0 {
		t.Fatalf("entrypoint missing or not executable: %+v", exe.hdr)
	}
	bin := filepath.Join(t.TempDir(), "pushd")
	if err := os.WriteFile(bin, exe.body, 0o755); err != nil {
		t.Fatal(err)
	}
	checkStatic(t, bin)
	if runtime.GOOS == "linux" {
		got, err := exec.CommandContext(ctx, bin, "-version").CombinedOutput()
		if err != nil || !strings.HasPrefix(string(got), "pushd v") {
			t.Errorf("the image's pushd -version: %v: %q", err, got)
		}
		t.Logf("the image's pushd -version: %s", bytes.TrimSpace(got))
	}
	if lic := files["usr/share/doc/pushd/LICENSE"].body; !bytes.Contains(lic, []byte("Apache License")) {
		t.Error("LICENSE missing from the image")
	}
}

type file struct {
	hdr  *tar.Header
	body []byte
}

// extract reads the image's flattened filesystem (names without a
// leading or trailing slash).
func extract(t *testing.T, img v1.Image) map[string]file {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	files := map[string]file{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatalf("read the image's filesystem: %v", err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[strings.Trim(h.Name, "/")] = file{hdr: h, body: body}
	}
}

// checkStatic fails unless bin is an ELF with no interpreter and no
// shared libraries: it runs on an empty base image.
func checkStatic(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("entrypoint is not an ELF: %v", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("entrypoint has an ELF interpreter: not static")
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		t.Fatal(err)
	}
	if len(libs) > 0 {
		t.Errorf("entrypoint needs shared libraries %v", libs)
	}
}

// TestBadCommandLine: a missing -o or a malformed -tag is a usage error
// that says what is wrong, before anything is built.
func TestBadCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "-o is required"},
		{[]string{"-o", "x.tar", "-tag", "Bad Tag!"}, "-tag"},
		{[]string{"-o", "x.tar", "extra"}, "unexpected arguments"},
	} {
		_, err := parseOptions(tc.args, io.Discard)
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseOptions(%q): %v, want ErrUsage mentioning %q", tc.args, err, tc.want)
		}
	}
}
