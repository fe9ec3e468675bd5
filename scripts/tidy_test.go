// Package scripts holds the tests of scripts/test.sh itself: the repository's
// one test command must fail when a Go module is not tidy.
package scripts

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// tidyRepo lays out a throw-away repository with a copy of scripts/test.sh,
// a root module and a nested module whose go.mod is goMod, and returns its
// root.
func tidyRepo(t *testing.T, goMod string) string {
	t.Helper()
	root := t.TempDir()
	script, err := os.ReadFile("test.sh")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"scripts/test.sh":  string(script),
		"go.mod":           "module example.com/root\n\ngo 1.26.8\n",
		"main.go":          "package main\n\nfunc main() {}\n",
		"nested/go.mod":    goMod,
		"nested/nested.go": "package nested\n",
	}
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func runTidy(t *testing.T, root string) (string, error) {
	t.Helper()
	cmd := exec.Command("bash", filepath.Join(root, "scripts", "test.sh"), "tidy")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestTidyCheckPassesOnTidyModules(t *testing.T) {
	root := tidyRepo(t, "module example.com/nested\n\ngo 1.26.8\n")
	out, err := runTidy(t, root)
	if err != nil {
		t.Fatalf("scripts/test.sh tidy on tidy modules: %v\n%s", err, out)
	}
	for _, m := range []string{"(.)", "(./nested)"} {
		if !strings.Contains(out, "go mod tidy -diff "+m) {
			t.Errorf("output does not show module %s checked:\n%s", m, out)
		}
	}
}

func TestTidyCheckFailsOnUntidyNestedModule(t *testing.T) {
	// An unused requirement: go mod tidy would remove it.
	root := tidyRepo(t, "module example.com/nested\n\ngo 1.26.8\n\nrequire github.com/gobwas/httphead v0.1.0\n")
	out, err := runTidy(t, root)
	if err == nil {
		t.Fatalf("scripts/test.sh tidy passed with an untidy nested module:\n%s", out)
	}
	if !strings.Contains(out, "module ./nested is not tidy") {
		t.Errorf("the failure does not name the module:\n%s", out)
	}
}
