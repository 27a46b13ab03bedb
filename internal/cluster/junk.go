package cluster

import (
	"encoding/binary"
	"math/rand/v2"

	"github.com/nlbproject/nlb/filter"
)

// JunkHeartbeatFrames returns n broadcast frames of the heartbeat
// ethertype from made-up sources, for floods: half random junk, half
// opening like heartbeats of another cluster (198.18.9.x), so that the
// data plane must read past the magic and version to drop them.
func JunkHeartbeatFrames(n int, seed uint64) [][]byte {
	r := rand.New(rand.NewPCG(seed, seed))
	frames := make([][]byte, n)
	for i := range frames {
		f := make([]byte, 60+r.IntN(100))
		for j := range f {
			f[j] = byte(r.Uint32())
		}
		copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		copy(f[6:12], []byte{0x02, 0x66, 0, 0, byte(i >> 8), byte(i)})
		binary.BigEndian.PutUint16(f[12:14], filter.EtherTypeHeartbeat)
		if i%2 == 0 {
			binary.BigEndian.PutUint32(f[14:18], filter.HeartbeatMagic)
			f[18] = filter.HeartbeatVersion
			copy(f[22:26], []byte{198, 18, 9, byte(i)})
		}
		frames[i] = f
	}
	return frames
}
