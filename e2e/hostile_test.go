//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/nlbproject/nlb/heartbeat"
	"github.com/nlbproject/nlb/internal/cluster"
	"github.com/nlbproject/nlb/internal/netns"
	"github.com/nlbproject/nlb/remote"
)

// TestHostileSegment: from a client namespace on the segment, an attacker
// without the cluster key sends forged heartbeats (another key,
// impersonating live host 2, claiming all 64 hosts as members), replays a
// real heartbeat of host 2, floods malformed heartbeat frames and
// malformed VIP packets, and sends forged and garbage remote-control
// datagrams. Every host refuses and counts each kind; no host changes
// epoch or state; 100 long-lived connections and a stream of new ones see
// no error.
func TestHostileSegment(t *testing.T) {
	netns.RequireRoot(t)
	c := cluster.New(t, cluster.Options{})
	epoch := startAll(t, c, all3)
	ll := openLongLived(t, c, 100)
	ld := startLoad(c, 4, cluster.PortHTTP)
	atk := c.Clients[1]
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	var pc *heartbeat.PacketConn
	if err := atk.NS.Do(func() (err error) { pc, err = heartbeat.ListenPacket(atk.Ifname, bcast); return }); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	keyBytes, err := os.ReadFile(c.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	realKey := heartbeat.DeriveKey(bytes.TrimSpace(keyBytes))
	// A real heartbeat of host 2, off the wire, for the replay.
	var real []byte
	var realHB *heartbeat.Heartbeat
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	for realHB == nil {
		fr, err := pc.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		b := fr.Payload
		if m, err := heartbeat.Unmarshal(b, &realKey); err == nil {
			if hb, ok := m.(*heartbeat.Heartbeat); ok && hb.HostID == 2 {
				real, realHB = b, hb
			}
		}
	}
	cancel()
	wrong := heartbeat.DeriveKey([]byte("not this cluster's key, but 32+ bytes long"))
	forge := func(f func(h *heartbeat.Heartbeat)) []byte {
		h := *realHB
		h.Seq += 1000
		f(&h)
		b, err := heartbeat.Marshal(&h, &wrong)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	before := scrapeAll(t, c)
	const forged = 50
	for i := range forged {
		for _, b := range [][]byte{
			forge(func(h *heartbeat.Heartbeat) { h.Seq += uint64(i) }),                                      // impersonates host 2
			forge(func(h *heartbeat.Heartbeat) { h.HostID, h.View, h.Members = 9, ^uint64(0), ^uint64(0) }), // all 64 hosts
			forge(func(h *heartbeat.Heartbeat) { h.Incarnation, h.State = h.Incarnation+1, 1 }),             // a "restarted" host 2, stopped
		} {
			if err := pc.Send(b); err != nil {
				t.Fatal(err)
			}
		}
		if err := pc.Send(real); err != nil { // the replay
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Malformed frames as fast as the socket takes them (bounded: 200 000
	// frames or 3 s): heartbeat ethertype with junk, and truncated IPv4 to
	// the VIP at the cluster MAC.
	r := rand.New(rand.NewPCG(9, 9))
	var frames [][]byte
	for i := range 200_000 {
		f := make([]byte, 14+r.IntN(120))
		for j := range f {
			f[j] = byte(r.Uint32())
		}
		copy(f[0:6], bcast)
		copy(f[6:12], []byte{0x02, 0x66, 0, 0, 0, 1})
		if i%2 == 0 {
			binary.BigEndian.PutUint16(f[12:], 0x886F)
		} else { // IPv4 to the VIP whose header claims more than the frame holds
			binary.BigEndian.PutUint16(f[12:], 0x0800)
			f = append(f[:14], make([]byte, 20)...)
			f[14], f[23] = 0x4f, 6 // IHL 15 words: 60 bytes of header in a 20-byte packet
			copy(f[30:34], cluster.VIP.AsSlice())
		}
		frames = append(frames, f)
	}
	sent, err := atk.SendRaw(frames, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Remote control: forged (another key) and garbage datagrams.
	var rsent int
	atk.NS.Do(func() error {
		conn, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(cluster.VIP, remote.DefaultPort)))
		if err != nil {
			return err
		}
		defer conn.Close()
		other := remote.DeriveKey([]byte("not this cluster's key, but 32+ bytes long"), remote.RoleAdmin)
		for i := range 10 {
			b, _ := remote.Marshal(&remote.Message{Kind: remote.KindRequest, Command: remote.CmdStop, Role: remote.RoleAdmin,
				Dest: cluster.VIP, Timestamp: time.Now().UnixNano(), Nonce: [16]byte{byte(i), 1}}, &other)
			conn.Write(b)
			conn.Write([]byte("NLBR\x01garbage that is not a request"))
			rsent += 2
			time.Sleep(60 * time.Millisecond) // under the per-source rate limit
		}
		return nil
	})
	time.Sleep(2 * time.Second)
	after := scrapeAll(t, c)
	t.Logf("sent %d forged heartbeats, %d replays, %d malformed frames, %d forged or garbage remote datagrams", 3*forged, forged, sent, rsent)
	for _, id := range all3 {
		delta := func(name string, labels ...string) float64 {
			a, _ := after[id].Value(name, labels...)
			b, _ := before[id].Value(name, labels...)
			return a - b
		}
		auth := delta("nlb_heartbeat_frames_refused_total", "reason", "bad-auth")
		replay := delta("nlb_heartbeat_frames_refused_total", "reason", "replay")
		self := delta("nlb_heartbeat_frames_refused_total", "reason", "self")
		junk := delta("nlb_heartbeat_frames_refused_total") - auth - replay - self
		overflow := delta("nlb_heartbeat_inbox_overflow_total")
		// Every heartbeat frame the data plane passed up is accounted for:
		// accepted from a peer, refused with a reason, or dropped because
		// the agent's inbox was full (all counted).
		passed := delta("nlb_packets_total", "rule", "none", "reason", "passed-heartbeat")
		lost := delta("nlb_heartbeat_frames_lost_total")
		accounted := delta("nlb_heartbeat_frames_received_total") + delta("nlb_heartbeat_frames_refused_total") + overflow + lost
		malformed := delta("nlb_packets_total", "reason", "dropped-malformed")
		// Forgeries and replays of a host ID bound to another Ethernet
		// source stop in the kernel (filter.HeartbeatSources).
		source := delta("nlb_packets_total", "rule", "none", "reason", "dropped-heartbeat-source")
		budget := delta("nlb_packets_total", "rule", "none", "reason", "dropped-heartbeat-budget")
		rauth := delta("nlb_remote_refused_total", "reason", "bad-auth")
		rjunk := delta("nlb_remote_refused_total", "reason", "malformed")
		t.Logf("host %d: heartbeat frames dropped in the kernel by source %.0f, by budget %.0f; passed up %.0f, accounted %.0f (refused: bad-auth %.0f, replay %.0f, own ID %.0f, malformed %.0f; inbox full %.0f; socket %.0f); VIP packets dropped malformed %.0f; remote refused: bad-auth %.0f, malformed %.0f",
			id, source, budget, passed, accounted, auth, replay, self, junk, overflow, lost, malformed, rauth, rjunk)
		// Every hostile heartbeat frame is counted: dropped in the kernel
		// (host 2's ID is bound to host 2's own source at hosts 1 and 3),
		// or refused by the agent (host 2 itself, and the made-up host 9,
		// whose IDs are unbound there). Host 2's own frame, replayed to
		// it, goes through its replay guard like any other: the first copy
		// passes as its own (looped back, ignored), the rest are replays.
		hostile := auth + replay + self + source + budget
		if id != 2 && source < 2*forged {
			t.Errorf("host %d dropped %.0f frames claiming host 2 from the attacker's source in the kernel, want %d", id, source, 2*forged)
		}
		if hostile < 4*forged || accounted < 0.99*passed || malformed < float64(sent)/4 || rauth != 10 || rjunk != 10 {
			t.Errorf("host %d did not count every hostile frame", id)
		}
		q, err := c.Query(id)
		if err != nil || q.Epoch != epoch || (q.State != "converged" && q.State != "converged as default") || len(q.Members) != 3 {
			t.Errorf("host %d after the attack: %+v %v (epoch before %d)", id, q, err, epoch)
		}
	}
	ld.finish(t, "new connections during the attack")
	ll.finish(t, "long-lived connections during the attack")
}

func scrapeAll(t *testing.T, c *cluster.Cluster) map[uint8]cluster.Scrape {
	t.Helper()
	out := map[uint8]cluster.Scrape{}
	for _, id := range all3 {
		m, err := c.Metrics(id)
		if err != nil {
			t.Fatal(err)
		}
		out[id] = m
	}
	return out
}
