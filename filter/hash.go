package filter

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// Seed is the cluster-wide 128-bit hash key. Every host must use the same
// seed; keeping it secret stops an outsider from choosing client ports that
// all land on one host.
type Seed [16]byte

// Hash choice (see docs/architecture.md, "Flow hash"): SipHash-1-3 keyed by
// the cluster seed over one 64-bit word. SipHash is a keyed PRF, so without
// the seed a client cannot aim flows at one bucket (jhash, as used by
// CLUSTERIP, is not). One message word plus the length block and three
// finalisation rounds is five SipRounds: about 70 ALU operations, no
// memory accesses, no loops — cheap and verifier-friendly in eBPF.

func sipRound(v0, v1, v2, v3 uint64) (uint64, uint64, uint64, uint64) {
	v0 += v1
	v1 = bits.RotateLeft64(v1, 13)
	v1 ^= v0
	v0 = bits.RotateLeft64(v0, 32)
	v2 += v3
	v3 = bits.RotateLeft64(v3, 16)
	v3 ^= v2
	v0 += v3
	v3 = bits.RotateLeft64(v3, 21)
	v3 ^= v0
	v2 += v1
	v1 = bits.RotateLeft64(v1, 17)
	v1 ^= v2
	v2 = bits.RotateLeft64(v2, 32)
	return v0, v1, v2, v3
}

// sipHash computes SipHash-c-d of msg (a multiple of 8 bytes long) under
// key. Only SipHash-1-3 over 8 bytes is used on the data path; the general
// form exists so tests can check the round function against the published
// SipHash-2-4 vectors.
func sipHash(key Seed, msg []byte, c, d int) uint64 {
	k0 := binary.LittleEndian.Uint64(key[0:8])
	k1 := binary.LittleEndian.Uint64(key[8:16])
	v0 := k0 ^ 0x736f6d6570736575
	v1 := k1 ^ 0x646f72616e646f6d
	v2 := k0 ^ 0x6c7967656e657261
	v3 := k1 ^ 0x7465646279746573
	n := len(msg)
	for len(msg) >= 8 {
		m := binary.LittleEndian.Uint64(msg)
		v3 ^= m
		for i := 0; i < c; i++ {
			v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
		}
		v0 ^= m
		msg = msg[8:]
	}
	var last [8]byte
	copy(last[:], msg)
	m := binary.LittleEndian.Uint64(last[:]) | uint64(n)<<56
	v3 ^= m
	for i := 0; i < c; i++ {
		v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	}
	v0 ^= m
	v2 ^= 0xff
	for i := 0; i < d; i++ {
		v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	}
	return v0 ^ v1 ^ v2 ^ v3
}

// HashWord is SipHash-1-3 of one 64-bit word (encoded little-endian) under
// seed. filter/bpf/nlb.c implements the same function.
func HashWord(seed Seed, w uint64) uint64 {
	var msg [8]byte
	binary.LittleEndian.PutUint64(msg[:], w)
	return sipHash(seed, msg[:], 1, 3)
}

// FlowWord builds the hash input for an IPv4 client under an affinity:
// the client address in the high 32 bits, the client port below it (zero
// unless affinity is none), and the affinity's address mask applied.
func FlowWord(client netip.Addr, port uint16, aff Affinity) uint64 {
	a4 := client.As4()
	ip := binary.BigEndian.Uint32(a4[:])
	switch aff {
	case AffinitySingle:
		port = 0
	case AffinityNetwork:
		port = 0
		ip &= 0xffffff00
	}
	return uint64(ip)<<32 | uint64(port)
}

// Bucket returns the bucket of a client under a rule's affinity.
func Bucket(seed Seed, client netip.Addr, port uint16, aff Affinity) uint16 {
	return uint16(HashWord(seed, FlowWord(client, port, aff)) & (Buckets - 1))
}
