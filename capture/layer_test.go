package capture

import (
	"errors"
	"net"
	"net/netip"
	"reflect"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/nlbproject/nlb/heartbeat"
)

var (
	testVIP = netip.MustParseAddr("198.18.0.100")
	testKey = heartbeat.DeriveKey([]byte("capture test key, 32 bytes or more"))
)

// frameOf wraps a message in an Ethernet frame built by gopacket.
func frameOf(t testing.TB, msg []byte) []byte {
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 1, 0xc6, 0x12, 0, 0x64}, DstMAC: layers.EthernetBroadcast,
		EthernetType: layers.EthernetType(0x886f)}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{}, eth, gopacket.Payload(msg)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sampleMessages() []heartbeat.Message {
	hb := &heartbeat.Heartbeat{ClusterVIP: testVIP, HostID: 2, State: 4, Incarnation: 1e18, Seq: 42,
		MAC: [6]byte{2, 2, 0xc6, 0x12, 0, 0x64}, DedicatedIP: netip.MustParseAddr("198.18.0.2"),
		View: 7, Epoch: 9, Phase: 2, Retaining: 1, Members: 7, VotersEpoch: 9, Voters: 7,
		Rules: []heartbeat.RuleSetting{{Weight: 50, Priority: 2}, {Weight: 0, Priority: 0, Flags: 1}}}
	hb.Echo[0], hb.Echo[2] = 11, 33
	hb.ConfigDigest[3], hb.EpochDigest[5] = 0xaa, 0xbb
	ch := &heartbeat.TableChunk{ClusterVIP: testVIP, HostID: 1, Table: 2, Chunk: 3, Incarnation: 5, Seq: 6, Epoch: 9}
	for i := range ch.Owners {
		ch.Owners[i] = uint8(i%3 + 1)
	}
	return []heartbeat.Message{hb, ch}
}

// TestLayerRoundTrip: every message type, signed by heartbeat.Marshal and
// framed by gopacket, decodes through the registered layer to the same
// message; its tag verifies under the key only; padding is the payload.
func TestLayerRoundTrip(t *testing.T) {
	other := heartbeat.DeriveKey([]byte("another key, also 32 bytes or more"))
	for _, msg := range sampleMessages() {
		b, err := heartbeat.Marshal(msg, &testKey)
		if err != nil {
			t.Fatal(err)
		}
		frame := frameOf(t, b)
		p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
		l, ok := p.Layer(LayerTypeNLB).(*NLB)
		if !ok {
			t.Fatalf("%T: no NLB layer in %v", msg, p)
		}
		if l.Err != nil || !reflect.DeepEqual(l.Msg, msg) {
			t.Errorf("%T: decoded %+v (%v), want %+v", msg, l.Msg, l.Err, msg)
		}
		if !l.Verify(heartbeat.Keyring{testKey}) || l.Verify(heartbeat.Keyring{other}) {
			t.Errorf("%T: tag verification wrong", msg)
		}
		if len(l.Contents) != len(b) {
			t.Errorf("%T: contents %d bytes, message %d", msg, len(l.Contents), len(b))
		}
	}
	// Junk under the ethertype (here the magic, then Ethernet's padding)
	// still yields the layer, with the reason.
	p := gopacket.NewPacket(frameOf(t, []byte("NLBH")), layers.LayerTypeEthernet, gopacket.Default)
	if l, ok := p.Layer(LayerTypeNLB).(*NLB); !ok || !errors.Is(l.Err, heartbeat.ErrVersion) || l.Msg != nil {
		t.Errorf("a 4-byte message: %+v", p)
	}
}

// FuzzLayer: any payload under the ethertype decodes without a panic; a
// message that decodes encodes again (reserved bytes, which decoding
// ignores, as zeros) to one that decodes to the same message.
func FuzzLayer(f *testing.F) {
	for _, msg := range sampleMessages() {
		b, _ := heartbeat.Marshal(msg, &testKey)
		f.Add(b)
	}
	f.Add([]byte("NLBH\x02\x01\x00\x10junk"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := gopacket.NewPacket(frameOf(t, b), layers.LayerTypeEthernet, gopacket.Default)
		l, ok := p.Layer(LayerTypeNLB).(*NLB)
		if !ok {
			t.Fatalf("no NLB layer")
		}
		if l.Err != nil {
			return
		}
		again, err := heartbeat.Marshal(l.Msg, &testKey)
		if err != nil {
			t.Fatalf("a decoded message does not encode: %v", err)
		}
		back, err := heartbeat.Decode(again)
		if err != nil || !reflect.DeepEqual(back, l.Msg) {
			t.Fatalf("re-encoded message decodes to %+v (%v), want %+v", back, err, l.Msg)
		}
	})
}
