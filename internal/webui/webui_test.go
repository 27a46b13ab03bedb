package webui

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nlbproject/nlb/remote"
)

// fakeCluster answers like three hosts, host 3 silent and evicted.
type fakeCluster struct {
	mu   sync.Mutex
	sent []string
}

func reply(host uint8, v any) remote.HostReply {
	b, _ := json.Marshal(v)
	return remote.HostReply{Status: remote.StatusOK, Reply: remote.Reply{Host: host, State: "converged", Result: b}}
}

func (f *fakeCluster) send(target uint8, cmd remote.Command, args remote.Args) (*remote.Result, error) {
	f.mu.Lock()
	f.sent = append(f.sent, fmt.Sprintf("%d %s %s", target, cmd, args.Rule))
	f.mu.Unlock()
	res := &remote.Result{}
	for _, id := range []uint8{1, 2} {
		switch cmd {
		case remote.CmdQuery:
			q := remote.QueryResult{Host: id, State: "converged", Epoch: 7, Members: remote.HostIDs{1, 2},
				Owned: map[string]int{"web": 2048}, LeaseValid: true, Version: "0.8.0", Accepted: 1000 * uint64(id),
				Silent: []remote.SilentPeer{{Host: 3, SilentMS: 2500, LeaseExpired: true, Evicted: true}}}
			if id == 2 {
				q.Health = map[string]string{"web": "down: http 503"}
			}
			res.Replies = append(res.Replies, reply(id, q))
		case remote.CmdPorts:
			pr := remote.PortRule{Name: "web", State: "enabled", Weight: 50, Owned: 2048}
			if args.Buckets {
				var o strings.Builder
				for b := range 4096 {
					fmt.Fprintf(&o, "%02x", b%2+1)
				}
				pr.Owners = o.String()
				marks := []byte(strings.Repeat("-", 4096))
				if id == 2 {
					marks[5], marks[6] = 'r', 'd'
				}
				pr.Marks = string(marks)
			}
			res.Replies = append(res.Replies, reply(id, remote.PortsResult{Host: id, Epoch: 7, Rules: []remote.PortRule{pr}}))
		case remote.CmdEvents:
			res.Replies = append(res.Replies, reply(id, remote.EventsResult{Boot: 1, First: 1, Last: 1,
				Events: []remote.Event{{Seq: 1, Time: "2026-12-07T10:00:00Z", Kind: "evict", Host: 3, Detail: "no heartbeat"}}}))
		default:
			res.Replies = append(res.Replies, reply(id, nil))
		}
	}
	return res, nil
}

func get(t *testing.T, h http.Handler, method, path, host string, hdr map[string]string, body string) (int, string) {
	t.Helper()
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	r.Host = host
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	b, _ := io.ReadAll(w.Result().Body)
	return w.Code, string(b)
}

func TestWebUI(t *testing.T) {
	f := &fakeCluster{}
	s := New(Options{Send: f.send, Role: remote.RoleAdmin, Title: "198.18.0.100"})
	now := time.Now()
	s.Poll(now)
	s.Poll(now.Add(time.Second))

	code, body := get(t, s, "GET", "/api/state", "127.0.0.1:8080", nil, "")
	var v View
	if code != 200 || json.Unmarshal([]byte(body), &v) != nil {
		t.Fatalf("state: %d %s", code, body)
	}
	if len(v.Hosts) != 3 || !v.Admin || v.Title != "198.18.0.100" {
		t.Fatalf("hosts %d admin %v: %s", len(v.Hosts), v.Admin, body)
	}
	h1, h2, h3 := v.Hosts[0], v.Hosts[1], v.Hosts[2]
	if h1.Sick || h1.Share["web"] != 50 || h1.AcceptPPS != 0 {
		t.Errorf("host 1: %+v", h1)
	}
	if !h2.Sick || len(h2.Notes) != 1 || !strings.Contains(h2.Notes[0], "http 503") {
		t.Errorf("host 2 (health down) not sick: %+v", h2)
	}
	if h3.ID != 3 || h3.Answering || !h3.Sick || !strings.Contains(h3.Notes[0], "evicted") {
		t.Errorf("host 3 (evicted) not sick: %+v", h3)
	}
	// Each event once, though polled twice.
	if len(v.Events) != 2 || v.Events[0].On != 1 || v.Events[1].On != 2 {
		t.Errorf("events: %+v", v.Events)
	}

	// The bucket map: owners of the newest epoch, handoff marks of all.
	code, body = get(t, s, "GET", "/api/buckets?rule=web", "localhost:8080", nil, "")
	var m BucketMap
	if code != 200 || json.Unmarshal([]byte(body), &m) != nil {
		t.Fatalf("buckets: %d %s", code, body)
	}
	if len(m.Owners) != 4096 || m.Owners[0] != 1 || m.Owners[1] != 2 || m.Flags[5] != 'r' || m.Flags[6] != 'd' || m.Flags[7] != '-' {
		t.Errorf("map: owners %v flags %q", m.Owners[:8], m.Flags[:8])
	}

	// Commands: only with the page's header, only known ones.
	code, _ = get(t, s, "POST", "/api/command", "127.0.0.1:8080", nil, `{"command":"drainstop","host":2}`)
	if code != http.StatusForbidden {
		t.Errorf("command without X-NLB-UI: %d", code)
	}
	ui := map[string]string{"X-NLB-UI": "1"}
	for _, bad := range []string{`{"command":"reload"}`, `{"command":"disable"}`, `{"command":"stop","rule":"web"}`, `{`} {
		if code, _ := get(t, s, "POST", "/api/command", "127.0.0.1:8080", ui, bad); code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", bad, code)
		}
	}
	code, body = get(t, s, "POST", "/api/command", "127.0.0.1:8080", ui, `{"command":"drainstop","host":2}`)
	if code != 200 || !strings.Contains(body, `"ok":true`) {
		t.Errorf("drainstop: %d %s", code, body)
	}
	get(t, s, "POST", "/api/command", "127.0.0.1:8080", ui, `{"command":"disable","rule":"web"}`)
	f.mu.Lock()
	sent := strings.Join(f.sent, "\n")
	f.mu.Unlock()
	if !strings.Contains(sent, "2 drainstop \n") || !strings.Contains(sent, "0 disable web") || strings.Contains(sent, "reload") {
		t.Errorf("sent:\n%s", sent)
	}

	// DNS rebinding: a name other than localhost is refused.
	if code, _ := get(t, s, "GET", "/api/state", "evil.example:8080", nil, ""); code != http.StatusMisdirectedRequest {
		t.Errorf("Host evil.example: %d", code)
	}
	// The page and its assets come from the binary.
	for _, p := range []string{"/", "/app.js", "/style.css"} {
		if code, body := get(t, s, "GET", p, "127.0.0.1", nil, ""); code != 200 || len(body) < 100 {
			t.Errorf("%s: %d", p, code)
		}
	}

	// With the monitor key the page is read-only.
	ro := New(Options{Send: f.send, Role: remote.RoleMonitor})
	ro.Poll(now)
	if code, _ := get(t, ro, "POST", "/api/command", "127.0.0.1", ui, `{"command":"stop","host":1}`); code != http.StatusForbidden {
		t.Errorf("monitor command: %d, want 403", code)
	}
	if _, body := get(t, ro, "GET", "/api/state", "127.0.0.1", nil, ""); !strings.Contains(body, `"admin":false`) {
		t.Errorf("monitor state: %s", body)
	}
}
