package filter

import (
	"math"
	"math/bits"
	"net/netip"
	"testing"
)

// TestFmix64 checks the finaliser against MurmurHash3's reference code
// (fmix64 of 0 is 0; of 1, the value below) and that it is a bijection on
// a sample, as the design relies on (no two words collide before keying).
func TestFmix64(t *testing.T) {
	if fmix64(0) != 0 {
		t.Fatal("fmix64(0) != 0")
	}
	if got, want := fmix64(1), uint64(0xb456bcfc34c2cb2c); got != want {
		t.Fatalf("fmix64(1) = %#x, want %#x", got, want)
	}
	seen := map[uint64]bool{}
	for i := uint64(0); i < 1<<16; i++ {
		h := fmix64(i << 16)
		if seen[h] {
			t.Fatalf("collision at %d", i)
		}
		seen[h] = true
	}
}

// TestHashKeyed: the seed changes the bucket of most flows, and flipping
// any input bit flips about half of the hash bits (avalanche).
func TestHashKeyed(t *testing.T) {
	c := netip.MustParseAddr("198.18.3.4")
	same := 0
	for p := 0; p < 4096; p++ {
		if Bucket(Seed{1}, c, uint16(p), AffinityNone) == Bucket(Seed{2}, c, uint16(p), AffinityNone) {
			same++
		}
	}
	if same > 20 { // expected about 1
		t.Fatalf("%d of 4096 flows kept their bucket under another seed", same)
	}
	seed := Seed{3, 1, 4, 1, 5, 9, 2, 6}
	for bit := 0; bit < 64; bit++ {
		flips := 0
		for i := uint64(0); i < 1000; i++ {
			w := i * 0x9e3779b97f4a7c15
			flips += bits.OnesCount64(HashWord(seed, w) ^ HashWord(seed, w^1<<bit))
		}
		if avg := float64(flips) / 1000; avg < 28 || avg > 36 {
			t.Fatalf("flipping input bit %d flips %.1f output bits on average, want about 32", bit, avg)
		}
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
