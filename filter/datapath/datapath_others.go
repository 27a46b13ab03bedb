//go:build !linux

package datapath

import (
	"errors"
	"time"

	"github.com/nlbproject/nlb/filter"
)

// ErrUnsupported is returned by the data plane on systems other than Linux.
var ErrUnsupported = errors.New("the nlb data plane needs Linux >= 6.6")

type Egress struct {
	Mask       bool
	ClusterMAC [6]byte
	MaskedMAC  [6]byte
}

type DatapathOptions struct{ PinDir string }

type Datapath struct{}

func Load(DatapathOptions) (*Datapath, error)              { return nil, ErrUnsupported }
func (*Datapath) Attach(int) error                         { return ErrUnsupported }
func (*Datapath) Update(*filter.State, Egress) error       { return ErrUnsupported }
func (*Datapath) RenewLease(time.Duration) error           { return ErrUnsupported }
func (*Datapath) ExpireLease() error                       { return ErrUnsupported }
func (*Datapath) BindHeartbeatSource(uint8, [6]byte) error { return ErrUnsupported }
func (*Datapath) Close() error                             { return nil }
func (*Datapath) Detach() error                            { return nil }
func RemovePinned(string) error                            { return ErrUnsupported }
