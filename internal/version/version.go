// Package version says which build of nlb is running.
package version

import (
	"runtime"
	"runtime/debug"
)

// Version is stamped at build time by the Makefile:
//
//	-ldflags "-X github.com/nlbproject/nlb/internal/version.Version=v0.8.0"
//
// Left empty (go build, go test), String falls back to the module version
// and VCS revision Go records in the binary.
var Version string

// String is the version of this build: the stamped one, else the module
// version or "devel" with the first 12 digits of the VCS revision, and
// "-dirty" for a build from modified sources.
func String() string {
	if Version != "" {
		return Version
	}
	v := "devel"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if mv := bi.Main.Version; mv != "" && mv != "(devel)" {
		v = mv
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		v += "+" + rev
	}
	return v + dirty
}

// Go is the Go release the binary was built with.
func Go() string { return runtime.Version() }
