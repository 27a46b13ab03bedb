package agent

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestHTTPServerTimeouts: a client that connects and sends nothing, or
// stops halfway through its headers, is disconnected; an idle keep-alive
// connection is closed.
func TestHTTPServerTimeouts(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		httpTimeouts{readHeader: 200 * time.Millisecond, read: 300 * time.Millisecond, write: time.Second, idle: 300 * time.Millisecond})
	go srv.Serve(l)
	defer srv.Close()
	for _, send := range []string{"", "GET /metrics HTTP/1.1\r\nHost: x\r\n"} {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, send)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(c); err != nil {
			t.Errorf("after %q: the server did not close the connection: %v", send, err)
		}
		c.Close()
	}
	// Idle keep-alive.
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Errorf("idle connection not closed: %v (read %q)", err, b)
	}
	if !exposedBind("0.0.0.0:9425") || !exposedBind("198.18.1.1:9425") || exposedBind("127.0.0.1:9425") || exposedBind("[::1]:9425") {
		t.Error("exposedBind")
	}
}
