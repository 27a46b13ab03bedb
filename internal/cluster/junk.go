package cluster

import (
	"encoding/binary"
	"math/rand/v2"

	"github.com/nlbproject/nlb/filter"
)

// JunkHeartbeatFrames returns n broadcast frames of the heartbeat
// ethertype from made-up sources, for floods, in three kinds: random
// junk; frames that open like heartbeats of another cluster (198.18.9.x),
// so that the data plane must read past the magic and version; and
// forgeries of this cluster's heartbeats (its VIP, a host ID 1..64 with
// the real hosts' among them, a made-up source address, a tag that cannot
// verify), which only the data plane's per-source budget stops before
// the agent's HMAC.
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
		if i%3 != 0 {
			binary.BigEndian.PutUint32(f[14:18], filter.HeartbeatMagic)
			f[18] = filter.HeartbeatVersion
			copy(f[22:26], []byte{198, 18, 9, byte(i)})
		}
		if i%3 == 2 {
			copy(f[22:26], VIP.AsSlice())
			f[26] = byte(1 + i%filter.MaxHostID)
		}
		frames[i] = f
	}
	return frames
}
