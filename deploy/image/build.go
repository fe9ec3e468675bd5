package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ErrUsage marks a bad command line.
var ErrUsage = errors.New("usage")

// The image's fixed layout.
const (
	binPath    = "/usr/local/bin/pushd"
	nonrootUID = 65532
	homeDir    = "/home/nonroot"
	wsPort     = "8080/tcp"
	adminPort  = "9090/tcp"
)

// options are the command's flags.
type options struct {
	out  string // tarball path
	tag  string // image reference recorded in the tarball
	arch string // GOARCH of the binary and the image
	repo string // the pushd repository (the server module's directory)
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.out, "o", "", "write the image tarball here (required)")
	fs.StringVar(&o.tag, "tag", "pushd:latest", "image reference recorded in the tarball (docker load tags it so)")
	fs.StringVar(&o.arch, "arch", runtime.GOARCH, "target architecture (GOARCH): amd64, arm64, ...")
	fs.StringVar(&o.repo, "repo", "", "the pushd repository to build (default: the parent of this module)")
	if err := fs.Parse(args); err != nil {
		return o, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("%w: unexpected arguments %q", ErrUsage, fs.Args())
	}
	if o.out == "" {
		return o, fmt.Errorf("%w: -o is required (the tarball to write)", ErrUsage)
	}
	if _, err := name.NewTag(o.tag); err != nil {
		return o, fmt.Errorf("%w: -tag %q: %w", ErrUsage, o.tag, err)
	}
	return o, nil
}

// build compiles pushd, assembles the image and writes the tarball. It
// returns the image digest.
func build(ctx context.Context, o options) (v1.Hash, error) {
	repo, err := repoDir(ctx, o.repo)
	if err != nil {
		return v1.Hash{}, err
	}
	tmp, err := os.MkdirTemp("", "pushd-image-")
	if err != nil {
		return v1.Hash{}, err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "pushd")
	if err := buildPushd(ctx, repo, o.arch, bin); err != nil {
		return v1.Hash{}, err
	}
	img, err := assemble(repo, bin, o.arch)
	if err != nil {
		return v1.Hash{}, err
	}
	tag, _ := name.NewTag(o.tag) // checked in parseOptions
	if err := tarball.WriteToFile(o.out, tag, img); err != nil {
		return v1.Hash{}, fmt.Errorf("write %s: %w", o.out, err)
	}
	return img.Digest()
}

// repoDir returns dir, or the directory above this module's go.mod.
func repoDir(ctx context.Context, dir string) (string, error) {
	if dir == "" {
		out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
		gomod := strings.TrimSpace(string(out))
		if err != nil || gomod == "" || gomod == os.DevNull {
			return "", fmt.Errorf("go env GOMOD: run inside the deploy module or pass -repo (%v)", err)
		}
		dir = filepath.Dir(filepath.Dir(gomod))
	}
	if _, err := os.Stat(filepath.Join(dir, "cmd", "pushd")); err != nil {
		return "", fmt.Errorf("-repo %s is not the pushd repository: %w", dir, err)
	}
	return dir, nil
}

// buildPushd compiles a static pushd for linux/arch. -buildvcs=auto
// overrides a GOFLAGS=-buildvcs=false so a build in a git clone records
// its revision (pushd -version, pushd_build_info).
func buildPushd(ctx context.Context, repo, arch, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=auto", "-ldflags=-s -w", "-o", out, "./cmd/pushd")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build cmd/pushd (GOARCH=%s): %w\n%s", arch, err, b)
	}
	return nil
}

// assemble builds the image from the binary at bin.
func assemble(repo, bin, arch string) (v1.Image, error) {
	layer, err := rootfs(repo, bin)
	if err != nil {
		return nil, err
	}
	lyr, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layer)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: lyr, History: v1.History{
		CreatedBy: "go -C deploy run ./image (static pushd, nonroot user)",
		Created:   v1.Time{Time: time.Unix(0, 0).UTC()},
	}})
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config = v1.Config{
		Entrypoint:   []string{binPath},
		Cmd:          []string{"-listen", "0.0.0.0:8080", "-admin-listen", "0.0.0.0:9090"},
		User:         fmt.Sprintf("%d:%d", nonrootUID, nonrootUID),
		WorkingDir:   homeDir,
		Env:          []string{"PATH=/usr/local/bin", "HOME=" + homeDir},
		ExposedPorts: map[string]struct{}{wsPort: {}, adminPort: {}},
		StopSignal:   "SIGTERM",
		Labels: map[string]string{
			"org.opencontainers.image.title":       "pushd",
			"org.opencontainers.image.description": "WebSocket push server; set PUSHD_ADMIN_API_KEY; probes: GET /livez and /readyz on 9090",
			"org.opencontainers.image.licenses":    "Apache-2.0",
			"org.opencontainers.image.source":      "https://github.com/pushd/pushd",
		},
	}
	return mutate.ConfigFile(img, cf)
}

// rootfs returns the layer's uncompressed tar.
func rootfs(repo, bin string) ([]byte, error) {
	exe, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	license, err := os.ReadFile(filepath.Join(repo, "LICENSE"))
	if err != nil {
		return nil, fmt.Errorf("LICENSE: %w", err)
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:%s:/sbin/nologin\n", nonrootUID, nonrootUID, homeDir)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", nonrootUID)
	type entry struct {
		name string
		mode int64
		uid  int
		body []byte
		dir  bool
	}
	entries := []entry{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/passwd", mode: 0o644, body: []byte(passwd)},
		{name: "etc/group", mode: 0o644, body: []byte(group)},
		{name: "home/", mode: 0o755, dir: true},
		{name: "home/nonroot/", mode: 0o700, uid: nonrootUID, dir: true},
		{name: "tmp/", mode: 0o1777, dir: true},
		{name: "usr/", mode: 0o755, dir: true},
		{name: "usr/local/", mode: 0o755, dir: true},
		{name: "usr/local/bin/", mode: 0o755, dir: true},
		{name: "usr/local/bin/pushd", mode: 0o755, body: exe},
		{name: "usr/share/", mode: 0o755, dir: true},
		{name: "usr/share/doc/", mode: 0o755, dir: true},
		{name: "usr/share/doc/pushd/", mode: 0o755, dir: true},
		{name: "usr/share/doc/pushd/LICENSE", mode: 0o644, body: license},
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.uid, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if e.dir {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
