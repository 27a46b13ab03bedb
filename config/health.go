package config

import (
	"errors"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nlbproject/nlb/health"
)

func resolveHealth(key, rule string, h *HealthConfig) (*health.Check, error) {
	c := &health.Check{Rule: rule, Kind: health.Kind(h.Type), Expect: h.Expect,
		Interval: time.Duration(h.Interval), Timeout: time.Duration(h.Timeout), Rise: h.Rise, Fall: h.Fall}
	if c.Interval == 0 {
		c.Interval = DefaultHealthInterval
	}
	if c.Timeout == 0 {
		c.Timeout = min(DefaultHealthTimeout, c.Interval)
	}
	if c.Rise == 0 {
		c.Rise = DefaultHealthRise
	}
	if c.Fall == 0 {
		c.Fall = DefaultHealthFall
	}
	only := func(field string, set bool) error {
		if set {
			return cerr(key+"."+field, "", "does not apply to a %s check", h.Type)
		}
		return nil
	}
	var err error
	switch c.Kind {
	case health.KindTCP:
		if _, _, e := net.SplitHostPort(h.Address); e != nil || h.Address == "" {
			return nil, cerr(key+".address", h.Address, "a tcp check needs host:port, e.g. 127.0.0.1:80")
		}
		c.Target = h.Address
		err = errors.Join(only("url", h.URL != ""), only("command", len(h.Command) > 0), only("expect", h.Expect != 0))
	case health.KindHTTP, health.KindHTTPS:
		u, e := url.Parse(h.URL)
		if e != nil || u.Scheme != h.Type || u.Host == "" {
			return nil, cerr(key+".url", h.URL, "a %s check needs a %s:// URL, e.g. %s://127.0.0.1/healthz", h.Type, h.Type, h.Type)
		}
		if h.Expect != 0 && (h.Expect < 100 || h.Expect > 599) {
			return nil, cerr(key+".expect", strconv.Itoa(h.Expect), "must be an HTTP status (100–599)")
		}
		c.Target = h.URL
		err = errors.Join(only("address", h.Address != ""), only("command", len(h.Command) > 0))
	case health.KindExec:
		if len(h.Command) == 0 || h.Command[0] == "" {
			return nil, cerr(key+".command", "", "an exec check needs a command, e.g. [/usr/local/bin/check, web]")
		}
		c.Command = h.Command
		err = errors.Join(only("address", h.Address != ""), only("url", h.URL != ""), only("expect", h.Expect != 0))
	default:
		return nil, cerr(key+".type", h.Type, "must be tcp, http, https or exec")
	}
	if err != nil {
		return nil, err
	}
	switch {
	case c.Interval < 100*time.Millisecond:
		return nil, cerr(key+".interval", c.Interval.String(), "must be at least 100ms")
	case c.Timeout <= 0 || c.Timeout > c.Interval:
		return nil, cerr(key+".timeout", c.Timeout.String(), "must be positive and at most the interval (%v)", c.Interval)
	case c.Rise < 1 || c.Rise > 100:
		return nil, cerr(key+".rise", strconv.Itoa(c.Rise), "must be 1..100")
	case c.Fall < 1 || c.Fall > 100:
		return nil, cerr(key+".fall", strconv.Itoa(c.Fall), "must be 1..100")
	}
	return c, nil
}

// HealthChecks returns the configured checks, in rule order.
func (r *Resolved) HealthChecks() []*health.Check {
	var out []*health.Check
	for _, hr := range r.HostRules {
		if hr.Health != nil {
			out = append(out, hr.Health)
		}
	}
	return out
}
