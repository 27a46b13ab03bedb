package heartbeat

import "testing"

// BenchmarkHeartbeatVerify measures what receiving one heartbeat costs
// before the convergence machine sees it: the HMAC-SHA256 check and the
// decoding (Unmarshal), for a frame of a 64-host cluster with 2 rules.
// cpu-64-hosts is the share of one core that a host of a 64-host cluster
// spends on it (63 peers, 10 heartbeats a second each).
func BenchmarkHeartbeatVerify(b *testing.B) {
	hb := sampleHeartbeat()
	hb.View, hb.Members = 1<<64-1, 1<<64-1
	for i := range hb.Echo {
		hb.Echo[i] = 1700000000000000000 + uint64(i)
	}
	frame, err := Marshal(hb, &testKey)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(frame)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Unmarshal(frame, &testKey); err != nil {
			b.Fatal(err)
		}
	}
	perFrame := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(perFrame*63*10/1e9*100, "%cpu-64-hosts")
}
