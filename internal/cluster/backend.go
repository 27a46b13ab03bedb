//go:build linux

package cluster

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"

	"github.com/nlbproject/nlb/internal/netns"
	"golang.org/x/sys/unix"
)

// startBackend serves, inside the host's namespace: HTTP on :80 and
// :8080 answering "host N", a TCP line echo on :7 ("N line"), and a UDP
// echo bound to the VIP on :7 (a wildcard UDP socket would answer from
// the dedicated IP). IP_FREEBIND lets it bind before the agent adds the
// VIP.
func startBackend(t netns.T, h *Host) {
	var closers []io.Closer
	err := h.NS.Do(func() error {
		freebind := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_FREEBIND, 1)
			})
			if err != nil {
				return err
			}
			return serr
		}}
		for _, port := range []uint16{PortHTTP, PortSticky} {
			if err := h.serveHTTP(port); err != nil {
				return err
			}
		}
		closers = append(closers, closerFunc(func() error {
			h.mu.Lock()
			defer h.mu.Unlock()
			for _, srv := range h.http {
				srv.Close()
			}
			return nil
		}))
		echo := func(network, addr string) error {
			ln, err := net.Listen(network, addr)
			if err != nil {
				return err
			}
			closers = append(closers, ln)
			go h.serveEcho(ln)
			return nil
		}
		if err := echo("tcp4", fmt.Sprintf(":%d", PortEcho)); err != nil {
			return err
		}
		if h.c.Opts.IPv6 {
			if err := echo("tcp6", fmt.Sprintf("[::]:%d", PortEcho)); err != nil {
				return err
			}
		}
		pc, err := freebind.ListenPacket(context.Background(), "udp4", netip.AddrPortFrom(VIP, PortEcho).String())
		if err != nil {
			return err
		}
		closers = append(closers, pc)
		go func() {
			buf := make([]byte, 2048)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo(append([]byte(fmt.Sprintf("%d ", h.ID)), buf[:n]...), from)
			}
		}()
		return nil
	})
	t.Cleanup(func() {
		for _, c := range closers {
			c.Close()
		}
	})
	if err != nil {
		t.Fatalf("backend of host %d: %v", h.ID, err)
	}
}

// serveEcho answers each line on each connection of ln with "N line".
func (h *Host) serveEcho(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			r := bufio.NewReader(conn)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if _, err := fmt.Fprintf(conn, "%d %s", h.ID, line); err != nil {
					return
				}
			}
		}()
	}
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// serveHTTP starts the HTTP backend on port ("host N"); it must run in
// the host's namespace.
func (h *Host) serveHTTP(port uint16) error {
	ln, err := net.Listen("tcp4", fmt.Sprintf(":%d", port))
	if err != nil {
		return err
	}
	body := fmt.Sprintf("host %d\n", h.ID)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h.Requests.Add(1)
		io.WriteString(w, body)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	if h.c.Opts.IPv6 {
		ln6, err := net.Listen("tcp6", fmt.Sprintf("[::]:%d", port))
		if err != nil {
			ln.Close()
			return err
		}
		go srv.Serve(ln6)
	}
	h.mu.Lock()
	if h.http == nil {
		h.http = map[uint16]*http.Server{}
	}
	h.http[port] = srv
	h.mu.Unlock()
	return nil
}

// StopHTTP stops host id's HTTP backend on PortHTTP (its listener and
// connections close): the service dies, the agent keeps running.
func (c *Cluster) StopHTTP(id uint8) {
	h := c.Hosts[id]
	h.mu.Lock()
	srv := h.http[PortHTTP]
	delete(h.http, PortHTTP)
	h.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// StartHTTP starts host id's HTTP backend on PortHTTP again.
func (c *Cluster) StartHTTP(id uint8) {
	h := c.Hosts[id]
	if err := h.NS.Do(func() error { return h.serveHTTP(PortHTTP) }); err != nil {
		c.T.Fatalf("start HTTP on host %d: %v", id, err)
	}
}
