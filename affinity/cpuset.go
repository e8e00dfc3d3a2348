package affinity

import (
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"strings"
)

// MaxCPU is the highest CPU number this package accepts. Linux kernels are
// built for at most 8192 CPUs; the bound keeps a hostile list such as
// "0-999999999" from allocating without limit.
const MaxCPU = 1<<16 - 1

// CPUSet is a sorted, duplicate-free list of CPU numbers. Every CPUSet
// returned by this package has that form; a literal such as CPUSet{0, 2}
// must be written sorted for [CPUSet.Contains] to work. The zero value
// (nil) is the empty set.
type CPUSet []int

// ParseCPUSet parses the Linux list format used by taskset -c, cpuset
// cgroups and the Cpus_allowed_list line of /proc/PID/status: comma-separated
// CPU numbers and inclusive ranges, such as "0-3,6". Surrounding white space
// (a trailing newline) is ignored; "" gives the empty set. Entries may
// overlap and come in any order; the result is sorted and duplicate-free.
// Errors start with "affinity: " and quote the input. CPU numbers above
// [MaxCPU] are rejected. The cost is linear in the input plus the highest
// CPU number.
func ParseCPUSet(s string) (CPUSet, error) {
	list := strings.TrimSpace(s)
	if list == "" {
		return CPUSet{}, nil
	}
	var words []uint64 // bitmap of the CPUs seen, grown to the highest one
	for entry := range strings.SplitSeq(list, ",") {
		lo, hi, isRange := strings.Cut(entry, "-")
		first, err := parseCPU(list, lo)
		if err != nil {
			return nil, err
		}
		last := first
		if isRange {
			if last, err = parseCPU(list, hi); err != nil {
				return nil, err
			}
			if last < first {
				return nil, fmt.Errorf("affinity: invalid CPU list %q: range %q ends before it starts", list, entry)
			}
		}
		if need := last/64 + 1; need > len(words) {
			words = append(words, make([]uint64, need-len(words))...)
		}
		for cpu := first; cpu <= last; cpu++ {
			words[cpu/64] |= 1 << (cpu % 64)
		}
	}
	n := 0
	for _, w := range words {
		n += bits.OnesCount64(w)
	}
	set := make(CPUSet, 0, n)
	for i, w := range words {
		for w != 0 {
			set = append(set, i*64+bits.TrailingZeros64(w))
			w &= w - 1
		}
	}
	return set, nil
}

// parseCPU parses one CPU number of list: decimal digits only (no sign, no
// spaces), at most MaxCPU.
func parseCPU(list, num string) (int, error) {
	if num == "" {
		return 0, fmt.Errorf("affinity: invalid CPU list %q: missing CPU number", list)
	}
	for _, c := range []byte(num) {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("affinity: invalid CPU list %q: %q is not a CPU number", list, num)
		}
	}
	cpu, err := strconv.Atoi(num)
	if err != nil || cpu > MaxCPU {
		return 0, fmt.Errorf("affinity: invalid CPU list %q: CPU %s exceeds %d", list, num, MaxCPU)
	}
	return cpu, nil
}

// String returns s in the Linux list format, such as "0-3,6", which
// [ParseCPUSet] reads back. The empty set gives "". A set that is not
// sorted and duplicate-free is normalised first.
func (s CPUSet) String() string {
	if !s.normal() {
		s = slices.Compact(slices.Sorted(slices.Values(s)))
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		j := i
		for j+1 < len(s) && s[j+1] == s[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(s[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(s[j]))
		}
		i = j + 1
	}
	return b.String()
}

// normal reports whether s is strictly increasing.
func (s CPUSet) normal() bool {
	for i := 1; i < len(s); i++ {
		if s[i] <= s[i-1] {
			return false
		}
	}
	return true
}

// Contains reports whether cpu is in s, by binary search (s must be sorted).
func (s CPUSet) Contains(cpu int) bool {
	_, found := slices.BinarySearch(s, cpu)
	return found
}
