// Command mutate is make mutate's driver. It runs gremlins (mutation
// testing) over the pure packages, replays the hand-written mutations of
// scripts/mutations.txt (each must be killed by the test it names), and
// writes docs/mutation.md: the score per package, every surviving mutant,
// and the equivalent mutants with the reason each is equivalent.
//
//	go run ./internal/mutate [-packages filter,heartbeat,...] [-out docs/mutation.md]
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// gremlins is pinned here: `go run` fetches exactly this version.
const gremlins = "github.com/go-gremlins/gremlins/cmd/gremlins@v0.6.0"

type report struct {
	Files []struct {
		Name      string `json:"file_name"`
		Mutations []struct {
			Line   int    `json:"line"`
			Column int    `json:"column"`
			Type   string `json:"type"`
			Status string `json:"status"`
		} `json:"mutations"`
	} `json:"files"`
}

// mutant is one gremlins mutant with the source line it changes.
type mutant struct {
	pkg, file, typ, status, src string
	line, col                   int
}

// equivalence marks a mutant that no test can kill: the program behaves
// the same. Keyed by file, mutator and the source line's text (so that it
// survives line moves).
type equivalence struct{ file, typ, src, why string }

// handMutation is one line of scripts/mutations.txt.
type handMutation struct{ file, from, to, pkg, run, why string }

func main() {
	pkgs := flag.String("packages", "filter,heartbeat,remote,config,health,convergence", "comma-separated packages for gremlins (empty: hand mutations only)")
	out := flag.String("out", "docs/mutation.md", "report to write")
	workers := flag.Int("workers", 2, "gremlins workers")
	flag.Parse()
	eqs, err := readEquivalences("scripts/mutation-equivalents.txt")
	check(err)
	hands, err := readHand("scripts/mutations.txt")
	check(err)

	var all []mutant
	var names []string
	if *pkgs != "" {
		names = strings.Split(*pkgs, ",")
	}
	for _, p := range names {
		ms, err := runGremlins(p, *workers)
		check(err)
		all = append(all, ms...)
	}
	handResults := runHand(hands)
	// Lines a killed hand mutation changed: gremlins cannot see coverage
	// of case expressions and constants, so it reports their mutants
	// "not covered"; a killed hand mutation of the same line shows a test
	// guards it.
	handLines := map[string]bool{}
	for i, h := range hands {
		if handResults[i] == "killed" {
			for _, l := range strings.Split(h.from, "\n") {
				handLines[h.file+"|"+strings.TrimSpace(l)] = true
			}
		}
	}

	var b bytes.Buffer
	fmt.Fprintf(&b, "# Mutation testing\n\nWritten by `make mutate` (`go run ./internal/mutate`) on %s; do not edit by hand.\n\n", time.Now().UTC().Format("2006-01-02"))
	b.WriteString("gremlins (" + strings.TrimPrefix(gremlins, "github.com/go-gremlins/gremlins/cmd/") + ") mutates each package's code and runs its tests. ")
	b.WriteString("**Score** is killed ÷ (killed + lived + not covered), equivalent mutants left out; a mutant that times out (an endless loop) counts as killed. ")
	b.WriteString("gremlins cannot see coverage of `case` expressions, so it reports them \"not covered\"; the hand mutations below cover those lines.\n\n")
	b.WriteString("**Score with hand mutations** also counts as killed a \"not covered\" mutant whose line a killed hand mutation changed.\n\n")
	b.WriteString("| package | killed | timed out | lived | not covered | of which a hand mutation kills the line | equivalent | score | score with hand mutations |\n|---|---|---|---|---|---|---|---|---|\n")
	var survivors []string
	for _, p := range names {
		var killed, timedOut, lived, notCovered, equivalent, handKilled int
		for _, m := range all {
			if m.pkg != p {
				continue
			}
			if e := matchEq(eqs, m); e != nil && m.status != "KILLED" && m.status != "TIMED OUT" {
				equivalent++
				continue
			}
			switch m.status {
			case "KILLED":
				killed++
			case "TIMED OUT":
				timedOut++
			case "LIVED":
				lived++
				survivors = append(survivors, fmt.Sprintf("| %s/%s:%d:%d | %s | lived | `%s` |", p, m.file, m.line, m.col, m.typ, m.src))
			case "NOT COVERED":
				notCovered++
				if handLines[p+"/"+m.file+"|"+m.src] {
					handKilled++
					continue
				}
				survivors = append(survivors, fmt.Sprintf("| %s/%s:%d:%d | %s | not covered | `%s` |", p, m.file, m.line, m.col, m.typ, m.src))
			}
		}
		den := killed + timedOut + lived + notCovered
		score, withHand := 100.0, 100.0
		if den > 0 {
			score = 100 * float64(killed+timedOut) / float64(den)
			withHand = 100 * float64(killed+timedOut+handKilled) / float64(den)
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %d | %.1f %% | %.1f %% |\n", p, killed, timedOut, lived, notCovered, handKilled, equivalent, score, withHand)
	}
	b.WriteString("\n## Surviving mutants\n\n")
	if len(survivors) == 0 {
		b.WriteString("None.\n")
	} else {
		b.WriteString("| where | mutator | status | line |\n|---|---|---|---|\n")
		b.WriteString(strings.Join(survivors, "\n") + "\n")
	}
	b.WriteString("\n## Equivalent mutants\n\nFrom `scripts/mutation-equivalents.txt`: no test can kill these, because the mutated program behaves the same.\n\n| file | mutator | line | why |\n|---|---|---|---|\n")
	for _, e := range eqs {
		fmt.Fprintf(&b, "| %s | %s | `%s` | %s |\n", e.file, e.typ, e.src, e.why)
	}
	b.WriteString("\n## Hand mutations\n\nFrom `scripts/mutations.txt`: bugs found by hand (issue #26's twelve among them) and lines gremlins cannot reach. Each must be killed by the test named.\n\n| file | mutation | test | killed | why it matters |\n|---|---|---|---|---|\n")
	failed := 0
	for i, h := range hands {
		k := handResults[i]
		if k != "killed" {
			failed++
		}
		show := strings.NewReplacer("\n", "⏎", "\t", "", "|", "\\|")
		fmt.Fprintf(&b, "| %s | `%s` → `%s` | %s %s | %s | %s |\n", h.file, show.Replace(h.from), show.Replace(h.to), h.pkg, h.run, k, h.why)
	}
	check(os.WriteFile(*out, b.Bytes(), 0o644))
	fmt.Printf("wrote %s\n", *out)
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "mutate: %d hand mutations not killed\n", failed)
		os.Exit(1)
	}
}

func runGremlins(pkg string, workers int) ([]mutant, error) {
	tmp, err := os.CreateTemp("", "gremlins-*.json")
	if err != nil {
		return nil, err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	// The mutate build tag selects convergence's fast simulation subset.
	args := []string{"run", gremlins, "unleash", "./" + pkg, "--workers", fmt.Sprint(workers),
		"--timeout-coefficient", "5", "--tags", "mutate", "-o", tmp.Name()}
	// Sub-packages (filter/datapath: the kernel loader; macmode/nic) are
	// not part of the package's pure code: gremlins names files relative
	// to the package.
	args = append(args, "-E", "^[a-z]+/")
	fmt.Printf("== gremlins %s\n", pkg)
	cmd := exec.Command("go", args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		// gremlins exits non-zero when it cannot remove its scratch
		// directory (files made by root tests); the report is written.
		fmt.Fprintf(os.Stderr, "gremlins %s: %v (reading its report)\n", pkg, err)
	}
	raw, err := os.ReadFile(tmp.Name())
	if err != nil {
		return nil, err
	}
	var r report
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("gremlins report for %s: %w", pkg, err)
	}
	var out []mutant
	for _, f := range r.Files {
		lines := sourceLines(filepath.Join(pkg, f.Name))
		for _, m := range f.Mutations {
			src := ""
			if m.Line-1 < len(lines) {
				src = strings.TrimSpace(lines[m.Line-1])
			}
			out = append(out, mutant{pkg: pkg, file: f.Name, typ: m.Type, status: m.Status, src: src, line: m.Line, col: m.Column})
		}
	}
	return out, nil
}

func runHand(hands []handMutation) []string {
	out := make([]string, len(hands))
	for i, h := range hands {
		orig, err := os.ReadFile(h.file)
		check(err)
		if n := bytes.Count(orig, []byte(h.from)); n != 1 {
			out[i] = fmt.Sprintf("pattern found %d times", n)
			continue
		}
		check(os.WriteFile(h.file, bytes.Replace(orig, []byte(h.from), []byte(h.to), 1), 0o644))
		cmd := exec.Command("go", "test", "-count=1", "-run", h.run, "./"+h.pkg)
		err = cmd.Run()
		check(os.WriteFile(h.file, orig, 0o644))
		if err != nil {
			out[i] = "killed"
		} else {
			out[i] = "SURVIVED"
		}
		fmt.Printf("hand mutation %d/%d %s: %s\n", i+1, len(hands), h.file, out[i])
	}
	return out
}

func matchEq(eqs []equivalence, m mutant) *equivalence {
	for i, e := range eqs {
		if e.file == m.pkg+"/"+m.file && e.typ == m.typ && e.src == m.src {
			return &eqs[i]
		}
	}
	return nil
}

func sourceLines(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return strings.Split(string(b), "\n")
}

// fields reads a file of lines of n "|"-separated fields; # starts a
// comment line.
func fields(path string, n int) ([][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Split(line, " | ")
		if len(parts) != n {
			return nil, fmt.Errorf("%s:%d: %d fields, want %d separated by \" | \"", path, ln, len(parts), n)
		}
		for i := range parts {
			parts[i] = strings.TrimSpace(parts[i])
		}
		out = append(out, parts)
	}
	return out, sc.Err()
}

func readEquivalences(path string) ([]equivalence, error) {
	rows, err := fields(path, 4)
	var out []equivalence
	for _, r := range rows {
		out = append(out, equivalence{r[0], r[1], r[2], r[3]})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].file < out[j].file })
	return out, err
}

func readHand(path string) ([]handMutation, error) {
	rows, err := fields(path, 6)
	var out []handMutation
	unescape := strings.NewReplacer(`\n`, "\n", `\t`, "\t")
	for _, r := range rows {
		out = append(out, handMutation{r[0], unescape.Replace(r[1]), unescape.Replace(r[2]), r[3], r[4], r[5]})
	}
	return out, err
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "mutate:", err)
		os.Exit(1)
	}
}
