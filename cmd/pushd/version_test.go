package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestVersionFlag runs -version through run: one line with the version,
// revision and Go version, on stdout, and nothing served.
func TestVersionFlag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"-version"}, &stdout, &stderr); err != nil {
		t.Fatalf("run -version: %v\n%s", err, stderr.Bytes())
	}
	line := strings.TrimSuffix(stdout.String(), "\n")
	t.Logf("-version: %s", line)
	// A test binary carries no module version, so the fallback shows.
	want := regexp.MustCompile(`^pushd ` + regexp.QuoteMeta(releaseVersion) + `\+devel revision \S+ go1\.\d+`)
	if strings.Contains(line, "\n") || !want.MatchString(line) {
		t.Errorf("-version printed %q, want one line matching %s", stdout.String(), want)
	}
	if stderr.Len() != 0 {
		t.Errorf("-version wrote to stderr: %q", stderr.Bytes())
	}
}

// TestVersionNotFromEnvironment: PUSHD_VERSION, which deploy tooling sets
// to the version it deploys, neither prints the version nor fails the
// start.
func TestVersionNotFromEnvironment(t *testing.T) {
	lookup := func(k string) (string, bool) {
		if k == "PUSHD_VERSION" {
			return "v0.1.0", true
		}
		return "", false
	}
	c, err := parseConfig(nil, lookup, io.Discard)
	if err != nil {
		t.Fatalf("PUSHD_VERSION=v0.1.0 broke the config: %v", err)
	}
	if c.Version {
		t.Error("PUSHD_VERSION set -version")
	}
}

// TestReleaseVersionMatchesChangelog keeps the fallback version equal to
// the top release of CHANGELOG.md.
func TestReleaseVersionMatchesChangelog(t *testing.T) {
	f, err := os.Open("../../CHANGELOG.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	heading := regexp.MustCompile(`^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$`)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := heading.FindStringSubmatch(sc.Text()); m != nil {
			if "v"+m[1] != releaseVersion {
				t.Errorf("CHANGELOG.md top release %s, releaseVersion %s", m[1], releaseVersion)
			}
			return
		}
	}
	t.Fatalf("CHANGELOG.md has no release heading (## [X.Y.Z] - YYYY-MM-DD): %v", sc.Err())
}
