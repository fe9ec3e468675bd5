package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

// releaseVersion is the newest release this source tree describes: the
// top release heading of CHANGELOG.md (a test keeps them equal). It is the
// version of builds that carry no module version of their own (go run, or
// go build with -buildvcs=false), marked "+devel".
const releaseVersion = "v0.1.0"

// buildVersion says which build is running, from the build info the Go
// toolchain embeds: the module version ("v0.1.0" for a build of a tagged
// commit, a pseudo-version for an untagged one, releaseVersion+"+devel"
// when the toolchain stamped none), the VCS revision and whether the tree
// was modified, and the Go version.
type buildVersion struct {
	Version  string
	Revision string
	Modified bool
	Go       string
}

// readBuildVersion reads the build info; a revision it lacks is "unknown".
func readBuildVersion() buildVersion {
	v := buildVersion{Version: releaseVersion + "+devel", Revision: "unknown", Go: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if strings.HasPrefix(bi.Main.Version, "v") { // not "" or "(devel)"
		v.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

// String is the -version line: "pushd v0.1.0 revision 64816c4… go1.26.8".
func (v buildVersion) String() string {
	rev := v.Revision
	if v.Modified {
		rev += "+modified"
	}
	return fmt.Sprintf("pushd %s revision %s %s", v.Version, rev, v.Go)
}

// printVersion is -version: one line on stdout.
func printVersion(stdout io.Writer) error {
	_, err := fmt.Fprintln(stdout, readBuildVersion())
	return err
}
