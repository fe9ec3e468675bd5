package jsclient_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// npm runs an npm command in dir and returns its stdout.
func npm(t *testing.T, ctx context.Context, dir string, args ...string) []byte {
	t.Helper()
	cmd := exec.CommandContext(ctx, "npm", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("npm %v in %s: %v\n%s%s", args, dir, err, out, stderr.Bytes())
	}
	return out
}

// TestNpmPackInstallsAndImports publishes the package the way npm would:
// npm pack makes the tarball, which must hold exactly the runtime files
// plus README and LICENSE; a fresh project installs it (offline: the
// package has no dependencies), imports it by its name from Node, and
// type-checks a TypeScript file against it through the package's exports
// (tsc --strict, module nodenext).
func TestNpmPackInstallsAndImports(t *testing.T) {
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (Node >= 20 with npm is required): %v", tool, err)
		}
	}
	tsc, err := filepath.Abs(filepath.Join("node_modules", "typescript", "bin", "tsc"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tsc); err != nil {
		t.Fatalf("typescript missing in clients/js/node_modules (run: cd clients/js && npm ci): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	packDir := t.TempDir()
	var packed []struct {
		Name     string `json:"name"`
		Version  string `json:"version"`
		Filename string `json:"filename"`
		Files    []struct {
			Path string `json:"path"`
		} `json:"files"`
	}
	out := npm(t, ctx, ".", "pack", "--json", "--pack-destination", packDir)
	if err := json.Unmarshal(out, &packed); err != nil || len(packed) != 1 {
		t.Fatalf("npm pack --json: %v\n%s", err, out)
	}
	p := packed[0]
	var files []string
	for _, f := range p.Files {
		files = append(files, f.Path)
	}
	slices.Sort(files)
	t.Logf("packed %s@%s: %s %v", p.Name, p.Version, p.Filename, files)
	if want := []string{"LICENSE", "README.md", "package.json", "pushd.d.ts", "pushd.js"}; !slices.Equal(files, want) {
		t.Errorf("tarball files %v, want %v", files, want)
	}
	lic, err := os.ReadFile("LICENSE")
	if err != nil {
		t.Fatal(err)
	}
	if root, err := os.ReadFile("../../LICENSE"); err != nil || !bytes.Equal(lic, root) {
		t.Errorf("clients/js/LICENSE differs from the repository's LICENSE (%v)", err)
	}

	proj := t.TempDir()
	if err := os.WriteFile(filepath.Join(proj, "package.json"), []byte(`{"name":"pack-smoke","private":true,"type":"module"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	npm(t, ctx, proj, "install", "--offline", "--no-audit", "--no-fund", "--loglevel=error", filepath.Join(packDir, p.Filename))

	// Import by name (resolved through "exports") and check the API.
	script := `import { connect } from "@pushd/client";
import pkg from "@pushd/client/package.json" with { type: "json" };
if (typeof connect !== "function") throw new Error("connect is " + typeof connect);
console.log(pkg.name + "@" + pkg.version + " connect:" + typeof connect);
`
	if err := os.WriteFile(filepath.Join(proj, "smoke.mjs"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "node", "smoke.mjs")
	cmd.Dir = proj
	got, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node smoke.mjs: %v\n%s", err, got)
	}
	if want := p.Name + "@" + p.Version + " connect:function\n"; string(got) != want {
		t.Errorf("node smoke.mjs printed %q, want %q", got, want)
	}

	// The types resolve through "exports" too; a wrong use must not compile,
	// so the check can fail.
	good := `import { connect, type ClientOptions } from "@pushd/client";
const opts: ClientOptions = { baseDelay: 100 };
const c = connect("ws://127.0.0.1:8080/ws", opts);
c.subscribe("room:1", { since: 0 });
c.close();
`
	bad := `import { connect } from "@pushd/client";
const c = connect("ws://127.0.0.1:8080/ws", { baseDelay: "soon" });
`
	tscArgs := []string{tsc, "--noEmit", "--strict", "--module", "nodenext", "--moduleResolution", "nodenext"}
	for _, tc := range []struct {
		name, src string
		ok        bool
		want      string // in the output
	}{{"good.ts", good, true, ""}, {"bad.ts", bad, false, "error TS2322"}} {
		if err := os.WriteFile(filepath.Join(proj, tc.name), []byte(tc.src), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(ctx, "node", append(tscArgs, tc.name)...)
		cmd.Dir = proj
		out, err := cmd.CombinedOutput()
		if (err == nil) != tc.ok || !bytes.Contains(out, []byte(tc.want)) {
			t.Errorf("tsc %s: err %v, want ok=%v and %q in the output\n%s", tc.name, err, tc.ok, tc.want, out)
		}
	}
}
