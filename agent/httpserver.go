package agent

import (
	"net/http"
	"net/netip"
	"time"
)

// httpTimeouts bound every phase of an HTTP connection, so that slow or
// idle clients cannot pile up connections.
type httpTimeouts struct {
	readHeader, read, write, idle time.Duration
}

// metricsTimeouts are the metrics endpoint's: a scrape reads a few
// hundred kilobytes at most.
var metricsTimeouts = httpTimeouts{readHeader: 5 * time.Second, read: 10 * time.Second, write: 30 * time.Second, idle: 60 * time.Second}

// newHTTPServer returns a server for h with the timeouts and a small
// header limit.
func newHTTPServer(h http.Handler, t httpTimeouts) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: t.readHeader, ReadTimeout: t.read,
		WriteTimeout: t.write, IdleTimeout: t.idle, MaxHeaderBytes: 16 << 10}
}

// exposedBind reports whether a listen address is reachable from other
// machines (not loopback): the agent warns, since metrics show the
// cluster's state to whoever can connect.
func exposedBind(addr string) bool {
	ap, err := netip.ParseAddrPort(addr)
	return err == nil && !ap.Addr().IsLoopback()
}
