package affinity

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestParseCPUSet(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want CPUSet
		out  string
	}{
		{"", CPUSet{}, ""},
		{"  \n", CPUSet{}, ""},
		{"0", CPUSet{0}, "0"},
		{"0\n", CPUSet{0}, "0"},
		{"0-3,6", CPUSet{0, 1, 2, 3, 6}, "0-3,6"},
		{"6,0-3", CPUSet{0, 1, 2, 3, 6}, "0-3,6"},
		{"0-1", CPUSet{0, 1}, "0-1"},
		{"1,0", CPUSet{0, 1}, "0-1"},
		{"2-2", CPUSet{2}, "2"},
		{"0-2,1-4,4", CPUSet{0, 1, 2, 3, 4}, "0-4"},
		{"63,64,127-128", CPUSet{63, 64, 127, 128}, "63-64,127-128"},
		{"007", CPUSet{7}, "7"},
		{"0,2,4-5,7", CPUSet{0, 2, 4, 5, 7}, "0,2,4-5,7"},
		{"65535", CPUSet{MaxCPU}, "65535"},
	} {
		got, err := ParseCPUSet(tc.in)
		if err != nil {
			t.Errorf("ParseCPUSet(%q): %v", tc.in, err)
			continue
		}
		if !slices.Equal(got, tc.want) || got == nil {
			t.Errorf("ParseCPUSet(%q) = %#v, want %#v", tc.in, got, tc.want)
		}
		if s := got.String(); s != tc.out {
			t.Errorf("ParseCPUSet(%q).String() = %q, want %q", tc.in, s, tc.out)
		}
	}
}

func TestParseCPUSetErrors(t *testing.T) {
	for _, in := range []string{
		",", "0,", ",0", "0,,1", "-", "-1", "1-", "3-1", "a", "0-a", "1-2-3",
		"+1", "1 ,2", "0 - 3", "0x1", "65536", "0-65536", "99999999999999999999999",
		"1.5", "0-3:2", "½",
	} {
		set, err := ParseCPUSet(in)
		if err == nil {
			t.Errorf("ParseCPUSet(%q) = %v, want an error", in, set)
			continue
		}
		if !strings.HasPrefix(err.Error(), "affinity: ") {
			t.Errorf("ParseCPUSet(%q) error %q lacks the package prefix", in, err)
		}
	}
}

func TestCPUSetString(t *testing.T) {
	for _, tc := range []struct {
		set  CPUSet
		want string
	}{
		{nil, ""},
		{CPUSet{5}, "5"},
		{CPUSet{0, 1, 2, 3, 6}, "0-3,6"},
		{CPUSet{0, 2, 3, 4, 8, 9}, "0,2-4,8-9"},
		{CPUSet{3, 1, 2, 2}, "1-3"}, // unsorted literals are normalised
	} {
		if got := tc.set.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.set, got, tc.want)
		}
	}
}

func TestCPUSetContains(t *testing.T) {
	set := CPUSet{0, 2, 3, 64}
	for cpu, want := range map[int]bool{-1: false, 0: true, 1: false, 2: true, 3: true, 4: false, 64: true, 65: false} {
		if got := set.Contains(cpu); got != want {
			t.Errorf("%v.Contains(%d) = %v, want %v", set, cpu, got, want)
		}
	}
	if CPUSet(nil).Contains(0) {
		t.Error("the empty set contains 0")
	}
}

func TestErrUnsupported(t *testing.T) {
	if !errors.Is(ErrUnsupported, errors.ErrUnsupported) {
		t.Fatal("ErrUnsupported does not match errors.ErrUnsupported")
	}
	if !strings.HasPrefix(ErrUnsupported.Error(), "affinity: ") {
		t.Fatalf("ErrUnsupported = %q, want the package prefix", ErrUnsupported)
	}
}

func FuzzParseCPUSet(f *testing.F) {
	for _, s := range []string{"", "0", "0-3,6", "6,0-3", "1-0", "0,,1", "63-65", "65535", "a-b", " 1\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		set, err := ParseCPUSet(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "affinity: ") {
				t.Fatalf("error %q lacks the package prefix", err)
			}
			return
		}
		for i, cpu := range set {
			if cpu < 0 || cpu > MaxCPU || i > 0 && cpu <= set[i-1] {
				t.Fatalf("ParseCPUSet(%q) = %v: not sorted, unique and in range", s, set)
			}
		}
		str := set.String()
		again, err := ParseCPUSet(str)
		if err != nil || !slices.Equal(again, set) {
			t.Fatalf("round trip of %q via %q = %v, %v; want %v", s, str, again, err, set)
		}
		if again.String() != str {
			t.Fatalf("String is not stable: %q then %q", str, again.String())
		}
	})
}
