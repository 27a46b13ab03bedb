package heartbeat

import "context"

// Conn sends and receives heartbeat message payloads on the cluster's L2
// segment. Implementations: PacketConn (AF_PACKET on a NIC) and MemConn (an
// in-memory network for tests).
type Conn interface {
	// Send transmits one message to every other host of the cluster.
	Send(msg []byte) error
	// Receive blocks until a frame payload arrives (it may carry Ethernet
	// padding after the message), ctx ends, or the Conn is closed.
	Receive(ctx context.Context) ([]byte, error)
	// Close releases the Conn; it is idempotent.
	Close() error
}
