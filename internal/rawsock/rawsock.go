// Package rawsock reads frames from an AF_PACKET socket for the agent's
// long-running receivers (heartbeats, ARP) so that they notice their
// context and outlive a link that goes down and comes back.
package rawsock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/mdlayher/packet"
)

// Read reads one frame into buf and returns ctx's error once ctx ends
// (the read is woken at once: ctx's end sets the socket's deadline, so an
// idle receiver costs no periodic wake-ups). When the link goes down the
// kernel reports ENETDOWN once to every socket bound to it; Read waits
// that out, checking every wake, as long as the interface exists, and
// fails, naming it, once the interface is gone: the agent then stops
// loudly rather than listen on nothing.
func Read(ctx context.Context, c *packet.Conn, ifi *net.Interface, buf []byte, wake time.Duration) (int, error) {
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return 0, err
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Now()) })
	defer stop()
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		n, _, err := c.ReadFrom(buf)
		switch {
		case err == nil:
			return n, nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			continue // ctx ended: the check above returns
		case errors.Is(err, syscall.ENETDOWN):
			if _, ierr := net.InterfaceByIndex(ifi.Index); ierr != nil {
				return 0, fmt.Errorf("interface %s is gone: %w", ifi.Name, err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(wake):
			}
		default:
			return 0, err
		}
	}
}
