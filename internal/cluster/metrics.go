//go:build linux

package cluster

import (
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics scrapes host id's Prometheus endpoint from the first client
// namespace and returns the parsed families.
func (c *Cluster) Metrics(id uint8) (Scrape, error) {
	var conn net.Conn
	err := c.Clients[0].NS.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp4", c.MetricsAddr(id).String(), 2*time.Second)
		return err
	})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, "GET /metrics HTTP/1.0\r\nAccept: text/plain\r\n\r\n"); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		return nil, err
	}
	head, body, ok := strings.Cut(string(b), "\r\n\r\n")
	if !ok || !strings.Contains(strings.SplitN(head, "\r\n", 2)[0], " 200 ") {
		return nil, fmt.Errorf("metrics of host %d: bad answer %.80q", id, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("metrics of host %d: %w", id, err)
	}
	return Scrape(fams), nil
}

// Scrape is one scrape's metric families by name.
type Scrape map[string]*dto.MetricFamily

// Value returns the value of the series of family name whose labels
// include all of labels (name, value pairs), summed over matching series,
// and whether any matched.
func (s Scrape) Value(name string, labels ...string) (float64, bool) {
	f := s[name]
	if f == nil {
		return 0, false
	}
	sum, found := 0.0, false
	for _, m := range f.Metric {
		if !hasLabels(m, labels) {
			continue
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Untyped != nil:
			sum += m.Untyped.GetValue()
		}
	}
	return sum, found
}

func hasLabels(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		ok := false
		for _, l := range m.Label {
			if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
