//go:build linux

package e2e

import (
	"encoding/binary"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/internal/cluster"
	"github.com/nlbproject/nlb/internal/netns"
)

// TestSYNFlood: 150 000 spoofed SYNs to VIP:80 (from addresses on the
// segment that do not exist, so no handshake ever completes), as fast as
// one socket sends them for at most 3 s, while 100 long-lived connections
// and a stream of new ones run. Each SYN lands on its bucket's owner only
// (the others drop it in the kernel), whose stack answers with SYN cookies
// once its backlog is full. Existing connections see no error; new ones
// keep succeeding; the agents' memory stays flat.
func TestSYNFlood(t *testing.T) {
	netns.RequireRoot(t)
	c := cluster.New(t, cluster.Options{})
	startAll(t, c, all3)
	ll := openLongLived(t, c, 100)
	ld := startLoad(c, 4, cluster.PortHTTP)
	rss0 := map[uint8]float64{}
	for _, id := range all3 {
		rss0[id] = rssKiB(t, c.Pid(id))
	}
	var frames [][]byte
	for i := range 150_000 {
		src := netip.AddrFrom4([4]byte{198, 18, 0, byte(150 + i%40)})
		p := &filter.Packet{Src: src, Dst: cluster.VIP, Proto: 6, SPort: uint16(1024 + i%60000), DPort: cluster.PortHTTP, TCPFlags: 0x02}
		f := p.Frame()
		copy(f[0:6], []byte{0x02, 0xbf, 198, 18, 0, 100}) // the unicast cluster MAC
		copy(f[6:12], []byte{0x02, 0x77, 0, 0, 0, byte(i)})
		tcpChecksum(f[14:])
		frames = append(frames, f)
	}
	start := time.Now()
	sent, err := c.Clients[1].SendRaw(frames, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	time.Sleep(2 * time.Second)
	for _, id := range all3 {
		m, err := c.Metrics(id)
		if err != nil {
			t.Fatal(err)
		}
		a, _ := m.Value("nlb_packets_total", "rule", "web", "reason", "accepted-owner")
		d, _ := m.Value("nlb_packets_total", "rule", "web", "reason", "dropped-not-owner")
		t.Logf("host %d: web packets accepted %.0f, dropped as not owner %.0f", id, a, d)
		growth := rssKiB(t, c.Pid(id)) - rss0[id]
		t.Logf("host %d: agent RSS %+.0f KiB during the flood", id, growth)
		if growth > 20*1024 {
			t.Errorf("host %d: agent memory grew by %.0f KiB", id, growth)
		}
	}
	t.Logf("%d spoofed SYNs in %v (%.0f/s)", sent, took.Round(time.Millisecond), float64(sent)/took.Seconds())
	if sent < 50_000 {
		t.Fatalf("only %d SYNs sent", sent)
	}
	for _, id := range all3 {
		t.Logf("host %d: %s", id, syncookies(t, c.Hosts[id]))
	}
	ld.finish(t, "new connections during the flood")
	ll.finish(t, "long-lived connections during the flood")
}

// tcpChecksum fills in the TCP checksum of an IPv4 packet.
func tcpChecksum(ip []byte) {
	ihl := int(ip[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	seg := ip[ihl:total]
	seg[16], seg[17] = 0, 0
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(ip[12:20]) // source and destination
	sum += 6 + uint32(len(seg))
	add(seg)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(seg[16:], ^uint16(sum))
}

func rssKiB(t *testing.T, pid int) float64 {
	t.Helper()
	v, err := cluster.ProcRSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// syncookies reads the host's SYN-cookie counters (TcpExt).
func syncookies(t *testing.T, h *cluster.Host) string {
	var out string
	h.NS.Do(func() error {
		raw, err := osReadFile("/proc/thread-self/net/netstat")
		if err != nil {
			return err
		}
		lines := strings.Split(raw, "\n")
		for i := 0; i+1 < len(lines); i += 2 {
			if !strings.HasPrefix(lines[i], "TcpExt:") {
				continue
			}
			names, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
			for j, n := range names {
				if n == "SyncookiesSent" || n == "ListenOverflows" || n == "TCPReqQFullDoCookies" {
					out += n + "=" + vals[j] + " "
				}
			}
		}
		return nil
	})
	return out
}

func osReadFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}
