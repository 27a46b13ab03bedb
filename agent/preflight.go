package agent

import (
	"fmt"
	"io"
	"strings"
)

// Verdict of one preflight check.
type Verdict string

const (
	Pass Verdict = "PASS"
	Warn Verdict = "WARN"
	Fail Verdict = "FAIL"
)

// Check is one line of nlbd --check-config: what was checked, the verdict,
// and what was found.
type Check struct {
	Name    string  `json:"check"`
	Verdict Verdict `json:"verdict"`
	Detail  string  `json:"detail"`
}

// Failed reports whether any check failed.
func Failed(cs []Check) bool {
	for _, c := range cs {
		if c.Verdict == Fail {
			return true
		}
	}
	return false
}

// PrintChecks writes one aligned line per check.
func PrintChecks(w io.Writer, cs []Check) {
	width := 0
	for _, c := range cs {
		width = max(width, len(c.Name))
	}
	for _, c := range cs {
		fmt.Fprintf(w, "%s  %-*s  %s\n", c.Verdict, width, c.Name, strings.ReplaceAll(c.Detail, "\n", "\n      "))
	}
}

// kernelAtLeast compares a uname release ("6.12.48+deb13-amd64") with a
// major.minor version ("6.6").
func kernelAtLeast(release, least string) bool {
	var ma, mi, lma, lmi int
	if n, _ := fmt.Sscanf(release, "%d.%d", &ma, &mi); n < 2 {
		return false
	}
	if n, _ := fmt.Sscanf(least, "%d.%d", &lma, &lmi); n < 2 {
		return false
	}
	return ma > lma || ma == lma && mi >= lmi
}
