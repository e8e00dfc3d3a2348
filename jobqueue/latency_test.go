package jobqueue

import (
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

// Sum and the cumulative buckets of a Latency are exact: each bucket counts
// the durations shorter than its power of two, boundaries included, and
// the quantiles are those of the log-linear histogram, as before.
func TestLatencySumAndBuckets(t *testing.T) {
	durations := []time.Duration{
		0, 500, 1023, // below 2^10 ns
		1024, 1025, 2047, // 2^10 itself counts in the next bucket
		time.Millisecond, 1500 * time.Microsecond, 3 * time.Second,
		1<<42 - 1, // the last bucket's largest value
		1 << 42,   // beyond the last bucket: in Count only
		2 * time.Hour,
	}
	for i := 1; i <= 1000; i++ {
		durations = append(durations, time.Duration(i)*time.Microsecond)
	}
	var a, b histogram // two workers' histograms, summed as Stats does
	var sum time.Duration
	for i, d := range durations {
		if i%2 == 0 {
			a.record(d)
		} else {
			b.record(d)
		}
		sum += d
	}
	var s histSum
	s.add(&a)
	s.add(&b)
	l := s.latency()

	if l.Count != uint64(len(durations)) || l.Sum != sum || l.Max != 2*time.Hour {
		t.Errorf("Count %d Sum %v Max %v, want %d %v %v", l.Count, l.Sum, l.Max, len(durations), sum, 2*time.Hour)
	}
	if len(l.Buckets) != 33 {
		t.Fatalf("%d buckets, want 33 (2^10 to 2^42 ns)", len(l.Buckets))
	}
	for i, bk := range l.Buckets {
		if want := time.Duration(1) << (10 + i); bk.UpperBound != want {
			t.Errorf("bucket %d: upper bound %v, want %v", i, bk.UpperBound, want)
		}
		var want uint64
		for _, d := range durations {
			if d < bk.UpperBound {
				want++
			}
		}
		if bk.Count != want {
			t.Errorf("bucket le %v: count %d, want %d", bk.UpperBound, bk.Count, want)
		}
	}
	// A few by hand: 4 durations below 1024 ns (0, 500, 1000 and 1023),
	// 8 below 2048 ns (also 1024, 1025, 2000 and 2047), and all but the
	// last two below 2^42 ns.
	if c := l.Buckets[0].Count; c != 4 {
		t.Errorf("le 2^10: %d, want 4", c)
	}
	if c := l.Buckets[1].Count; c != 8 {
		t.Errorf("le 2^11: %d, want 8", c)
	}
	if c := l.Buckets[32].Count; c != l.Count-2 {
		t.Errorf("le 2^42: %d, want %d", c, l.Count-2)
	}

	// The quantiles: the nearest-rank duration's bucket high, capped at Max.
	sorted := slices.Clone(durations)
	slices.Sort(sorted)
	for _, q := range []struct {
		f   float64
		got time.Duration
	}{{0.50, l.P50}, {0.90, l.P90}, {0.99, l.P99}} {
		v := sorted[int(math.Ceil(q.f*float64(len(sorted))))-1]
		want := time.Duration(min(bucketHigh(bucketOf(int64(v))), int64(l.Max)))
		if q.got != want {
			t.Errorf("p%v = %v, want %v (rank value %v)", 100*q.f, q.got, want, v)
		}
	}
	// The median is 500µs, in the bucket [458752, 524287] ns.
	if l.P50 != 524287*time.Nanosecond || l.P99 != 1048575*time.Nanosecond {
		t.Errorf("P50 %v P99 %v, want 524.287µs and 1.048575ms", l.P50, l.P99)
	}

	// The JSON form has the sum but not the buckets.
	data, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	if m["sum"] != float64(sum) || len(m) != 6 || strings.Contains(strings.ToLower(string(data)), "bucket") {
		t.Errorf("JSON %s", data)
	}
}

// An empty Latency still has every bucket, all zero, so that an exporter
// sees the same series before and after the first duration.
func TestLatencyEmpty(t *testing.T) {
	var s histSum
	l := s.latency()
	if l.Count != 0 || l.Sum != 0 || l.P99 != 0 || len(l.Buckets) != 33 {
		t.Fatalf("empty latency %+v", l)
	}
	for _, bk := range l.Buckets {
		if bk.Count != 0 {
			t.Errorf("bucket %+v", bk)
		}
	}
}
