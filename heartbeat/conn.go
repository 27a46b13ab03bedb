package heartbeat

import "context"

// Conn sends and receives heartbeat message payloads on the cluster's L2
// segment. Implementations: PacketConn (AF_PACKET on a NIC) and MemConn (an
// in-memory network for tests).
type Conn interface {
	// Send transmits one message to every other host of the cluster.
	Send(msg []byte) error
	// Receive blocks until a frame arrives (its payload may carry
	// Ethernet padding after the message), ctx ends, or the Conn is
	// closed.
	Receive(ctx context.Context) (Frame, error)
	// Close releases the Conn; it is idempotent.
	Close() error
}

// Frame is a received frame: the message payload and the Ethernet source
// it came from (the agent binds a host's ID to the source of its admitted
// frames in the data plane: filter.HeartbeatSources).
type Frame struct {
	Payload []byte
	Source  [6]byte
}
