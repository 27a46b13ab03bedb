package filter

import (
	"math"
	"net/netip"
	"testing"
)

// TestSipHashVector checks the round function against the SipHash-2-4
// reference vector from the SipHash paper (key 00..0f, message 00..0e).
func TestSipHashVector(t *testing.T) {
	var key Seed
	for i := range key {
		key[i] = byte(i)
	}
	msg := make([]byte, 15)
	for i := range msg {
		msg[i] = byte(i)
	}
	// sipHash takes whole words for the body; the tail handling covers 15.
	if got, want := sipHash(key, msg, 2, 4), uint64(0xa129ca6149be45e5); got != want {
		t.Fatalf("SipHash-2-4 = %#x, want %#x", got, want)
	}
	if got, want := sipHash(key, nil, 2, 4), uint64(0x726fdb47dd0e0e31); got != want {
		t.Fatalf("SipHash-2-4(empty) = %#x, want %#x", got, want)
	}
}

func TestFlowWordAffinity(t *testing.T) {
	c := netip.MustParseAddr("198.18.5.77")
	tests := []struct {
		aff  Affinity
		port uint16
		want uint64
	}{
		{AffinityNone, 4242, 0xc612054d_0000_1092},
		{AffinitySingle, 4242, 0xc612054d_0000_0000},
		{AffinityNetwork, 4242, 0xc6120500_0000_0000},
	}
	for _, tt := range tests {
		if got := FlowWord(c, tt.port, tt.aff); got != tt.want {
			t.Errorf("FlowWord(%v) = %#x, want %#x", tt.aff, got, tt.want)
		}
	}
}

// TestBucketUniform checks that buckets of sequential client ports are
// spread evenly (chi-square well under the 99.9% critical value).
func TestBucketUniform(t *testing.T) {
	seed := Seed{1, 2, 3}
	const n = Buckets * 64
	var counts [Buckets]int
	for i := 0; i < n; i++ {
		c := netip.AddrFrom4([4]byte{198, 18, 9, byte(i >> 16)})
		counts[Bucket(seed, c, uint16(i), AffinityNone)]++
	}
	exp := float64(n) / Buckets
	chi := 0.0
	for _, o := range counts {
		d := float64(o) - exp
		chi += d * d / exp
	}
	// df = 4095: mean 4095, sd ~90.5; 99.9% critical value ~ 4380.
	if limit := 4095 + 3.1*math.Sqrt(2*4095); chi > limit {
		t.Fatalf("chi-square %.0f > %.0f: bucket spread is not uniform", chi, limit)
	}
}

func BenchmarkHashWord(b *testing.B) {
	seed := Seed{9}
	var acc uint64
	for i := 0; i < b.N; i++ {
		acc += HashWord(seed, uint64(i))
	}
	_ = acc
}
