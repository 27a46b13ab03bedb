package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nlbproject/nlb/remote"
)

// TestKeygen: a new key file is 32 random bytes in base64, mode 0600,
// never overwritten without --force; the key it holds is accepted.
func TestKeygen(t *testing.T) {
	p := filepath.Join(t.TempDir(), "admin.key")
	if code, _, errs := runCtl("keygen", p); code != 0 {
		t.Fatalf("keygen: %d %s", code, errs)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", fi.Mode(), err)
	}
	b, _ := os.ReadFile(p)
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(raw) != 32 {
		t.Fatalf("key file holds %q", b)
	}
	if code, _, errs := runCtl("keygen", p); code == 0 || !strings.Contains(errs, "exists") {
		t.Fatalf("keygen over an existing file: %d %s", code, errs)
	}
	os.Chmod(p, 0o644)
	if code, _, _ := runCtl("keygen", "--force", p); code != 0 {
		t.Fatal("keygen --force failed")
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("--force left mode %v", fi.Mode())
	}
	if b2, _ := os.ReadFile(p); string(b2) == string(b) {
		t.Fatal("--force wrote the same key")
	}
	if code, _, _ := runCtl("keygen"); code != exitUsage {
		t.Fatalf("keygen without FILE: exit %d, want %d", code, exitUsage)
	}
}

// TestForgedRefusalIgnored: a machine on the segment answers nlbctl's
// request with forged refusals and forged replies (it does not hold the
// key); nlbctl ignores them and reports that no host answered (exit 3),
// not a refusal (5) or a success (0).
func TestForgedRefusalIgnored(t *testing.T) {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		buf := make([]byte, remote.MaxDatagram)
		for ctx.Err() == nil {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			req, err := remote.Unmarshal(buf[:n], nil) // the attacker reads the header
			if err != nil {
				continue
			}
			for _, st := range []remote.Status{remote.StatusRefused, remote.StatusStale, remote.StatusForbidden, remote.StatusOK} {
				for _, key := range []*remote.Key{nil, {1, 2, 3}} {
					m := &remote.Message{Kind: remote.KindReply, Command: req.Command, Status: st, RequestID: req.RequestID,
						Host: 1, Role: req.Role, Nonce: req.Nonce, Dest: req.Dest}
					if st == remote.StatusOK {
						m.Body = []byte(`{"host":1,"state":"converged","peers":[1]}`)
					}
					b, _ := remote.Marshal(m, key)
					pc.WriteToUDPAddrPort(b, from)
				}
			}
		}
	}()
	key := filepath.Join(t.TempDir(), "admin.key")
	os.WriteFile(key, []byte(strings.Repeat("k", 40)), 0o600)
	port := pc.LocalAddr().(*net.UDPAddr).Port
	code, out, errs := runCtl("--host", "127.0.0.1", "--port", itoa(port), "--key-file", key, "--timeout", "500ms", "stop")
	if code != exitTimeout {
		t.Fatalf("exit %d (%s%s), want %d: forged answers were believed", code, out, errs, exitTimeout)
	}
}

// TestFilterJSONArrays: the --json output of filter writes host lists as
// arrays of numbers (a script reads "accepted_by":[2], not base64).
func TestFilterJSONArrays(t *testing.T) {
	cfg := testConfig(t)
	code, out, errs := runCtl("filter", "--config", cfg, "--members", "1,2,3", "--client", "198.19.0.5:40000", "--vip", "198.18.0.100:80", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatal(err)
	}
	if a := string(raw["accepted_by"]); !strings.HasPrefix(a, "[") || strings.Contains(a, `"`) {
		t.Fatalf("accepted_by is %s, want an array of numbers\n%s", a, out)
	}
}
