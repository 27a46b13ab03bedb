// Command benchreport turns the output of `make bench` (go test -bench
// lines) into docs/benchmarks.md through the template beside it: every
// figure in the report comes from the run, never from a hand-edited file.
package main

import (
	"bufio"
	_ "embed"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"
)

//go:embed benchmarks.md.tmpl
var tmpl string

// results maps a benchmark name (without the -GOMAXPROCS suffix) to its
// metrics, each with one value per run (-count).
type results map[string]map[string][]float64

var lineRE = regexp.MustCompile(`^(Benchmark\S+?)(-\d+)?\s+\d+\s+(.*)$`)

func parse(r io.Reader) (results, []string, error) {
	res := results{}
	var logs []string
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		line := s.Text()
		// Each package prints its cpu line; keep each distinct one once.
		if cpu, ok := strings.CutPrefix(strings.TrimSpace(line), "cpu:"); ok && !slices.Contains(logs, strings.TrimSpace(cpu)) {
			logs = append(logs, strings.TrimSpace(cpu))
		}
		m := lineRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		f := strings.Fields(m[3])
		if len(f)%2 != 0 {
			return nil, nil, fmt.Errorf("odd metrics in %q", line)
		}
		if res[m[1]] == nil {
			res[m[1]] = map[string][]float64{}
		}
		for i := 0; i < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, nil, fmt.Errorf("%q: %v", line, err)
			}
			res[m[1]][f[i+1]] = append(res[m[1]][f[i+1]], v)
		}
	}
	return res, logs, s.Err()
}

func (r results) values(name, metric string) []float64 {
	v := r[name][metric]
	if len(v) == 0 {
		log.Fatalf("the run has no %s %s", name, metric)
	}
	return slices.Sorted(slices.Values(v))
}

func main() {
	in := flag.String("in", "bench-results.txt", "go test -bench output")
	soak := flag.String("soak", "", "make soak output to include, if present")
	out := flag.String("out", "docs/benchmarks.md", "report to write")
	secs := flag.Int("seconds", 0, "how long the run took")
	flag.Parse()
	f, err := os.Open(*in)
	if err != nil {
		log.Fatal(err)
	}
	res, cpu, err := parse(f)
	f.Close()
	if err != nil {
		log.Fatal(err)
	}
	if *soak != "" {
		if sf, err := os.Open(*soak); err == nil {
			sr, _, err := parse(sf)
			sf.Close()
			if err != nil {
				log.Fatal(err)
			}
			for k, v := range sr {
				res[k] = v
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	funcs := template.FuncMap{
		"med":  func(name, metric string) float64 { v := res.values(name, metric); return v[len(v)/2] },
		"max":  func(name, metric string) float64 { v := res.values(name, metric); return v[len(v)-1] },
		"min":  func(name, metric string) float64 { return res.values(name, metric)[0] },
		"n":    func(name, metric string) int { return len(res.values(name, metric)) },
		"vals": func(name, metric string) []float64 { return res[name][metric] },
		"has":  func(name, metric string) bool { return len(res[name][metric]) > 0 },
		"list": func(s ...string) []string { return s },
		"f":    format,
		"sub":  func(a, b float64) float64 { return a - b },
		"add":  func(a, b float64) float64 { return a + b },
		"div":  func(a, b float64) float64 { return a / b },
		"mul":  func(a, b float64) float64 { return a * b },
		"met": func(v float64, op string, target float64) string {
			ok := map[string]bool{"<=": v <= target, ">=": v >= target, "==": v == target}[op]
			if ok {
				return "met"
			}
			return "**missed**"
		},
	}
	t := template.Must(template.New("report").Funcs(funcs).Parse(tmpl))
	var b strings.Builder
	data := map[string]string{
		"CPU":     strings.Join(cpu, "; "),
		"Kernel":  strings.TrimSpace(string(kernel)),
		"Go":      runtime.Version(),
		"CPUs":    strconv.Itoa(runtime.NumCPU()),
		"Date":    time.Now().UTC().Format("2006-01-02"),
		"Seconds": strconv.Itoa(*secs),
	}
	if err := t.Execute(&b, data); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*out, []byte(b.String()), 0o644); err != nil {
		log.Fatal(err)
	}
}

// format prints a figure with at most 3 significant digits, without
// exponent for the magnitudes in the report.
func format(v float64) string {
	switch a := max(v, -v); {
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}
