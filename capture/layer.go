// Package capture shows an nlb cluster's traffic: a gopacket layer for
// the heartbeat ethertype (0x886F), an analyzer that annotates VIP
// traffic with the host the tables say should take it and flags what is
// wrong (nlbctl capture), and a replay of captures through the filter
// model (nlbctl filter --pcap).
package capture

import (
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/heartbeat"
)

// LayerTypeNLB is the layer of frames with the heartbeat ethertype:
// heartbeats and table chunks. Registering it makes gopacket's Ethernet
// decoder hand such frames to it.
var LayerTypeNLB = gopacket.RegisterLayerType(1886, gopacket.LayerTypeMetadata{Name: "NLB", Decoder: gopacket.DecodeFunc(decodeNLB)})

func init() {
	layers.EthernetTypeMetadata[filter.EtherTypeHeartbeat] = layers.EnumMetadata{
		DecodeWith: gopacket.DecodeFunc(decodeNLB), Name: "NLB", LayerType: LayerTypeNLB}
}

// NLB is one message of the heartbeat ethertype, decoded without a key
// (Verify checks its tag). A frame that is not a well-formed message
// still yields the layer, with Err set and Msg nil, so that a capture can
// show it.
type NLB struct {
	layers.BaseLayer
	// Msg is a *heartbeat.Heartbeat or a *heartbeat.TableChunk.
	Msg heartbeat.Message
	// Err says why the frame is not a well-formed message (wraps one of
	// heartbeat's Err* reasons).
	Err error
}

// LayerType implements gopacket.Layer.
func (n *NLB) LayerType() gopacket.LayerType { return LayerTypeNLB }

// CanDecode implements gopacket.DecodingLayer.
func (n *NLB) CanDecode() gopacket.LayerClass { return LayerTypeNLB }

// NextLayerType implements gopacket.DecodingLayer: nothing follows.
func (n *NLB) NextLayerType() gopacket.LayerType { return gopacket.LayerTypeZero }

// DecodeFromBytes implements gopacket.DecodingLayer. It never fails: a
// malformed message is reported in Err.
func (n *NLB) DecodeFromBytes(data []byte, _ gopacket.DecodeFeedback) error {
	n.Msg, n.Err = heartbeat.Decode(data)
	size := len(data)
	if n.Err == nil { // a decoded message has its length at bytes 6-7
		size = min(int(data[6])<<8|int(data[7]), len(data))
	}
	n.BaseLayer = layers.BaseLayer{Contents: data[:size], Payload: data[size:]} // Payload: Ethernet padding
	return nil
}

// Verify reports whether the message's tag verifies under one of keys.
func (n *NLB) Verify(keys heartbeat.Keyring) bool {
	return n.Err == nil && heartbeat.Authentic(n.Contents, keys)
}

func decodeNLB(data []byte, p gopacket.PacketBuilder) error {
	n := &NLB{}
	if err := n.DecodeFromBytes(data, p); err != nil {
		return err
	}
	p.AddLayer(n)
	return nil
}
