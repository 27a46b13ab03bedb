package main

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	in := `cpu: Some CPU
BenchmarkDatapath/drop-2         	 1000000	        23.00 ns/pkt
BenchmarkDatapath/drop-2         	 1000000	        21.00 ns/pkt
BenchmarkHTTP-2   	       1	         9.955 nlb1-p99-ms	      4989 nlb1-req/s
PASS
cpu: Some CPU
`
	r, logs, err := parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.values("BenchmarkDatapath/drop", "ns/pkt"); len(got) != 2 || got[0] != 21 {
		t.Fatalf("drop: %v", got)
	}
	if got := r.values("BenchmarkHTTP", "nlb1-req/s"); got[0] != 4989 {
		t.Fatalf("http: %v", got)
	}
	if len(logs) != 1 || logs[0] != "Some CPU" { // once, though two packages print it
		t.Fatalf("cpu lines: %v", logs)
	}
	if format(1234.5) != "1234" && format(1234.5) != "1235" || format(2.687) != "2.69" || format(0.1234) != "0.123" {
		t.Fatalf("format: %s %s %s", format(1234.5), format(2.687), format(0.1234))
	}
}
