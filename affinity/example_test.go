package affinity_test

import (
	"fmt"
	"os/exec"

	"github.com/corework/corework/affinity"
)

func ExampleParseCPUSet() {
	set, err := affinity.ParseCPUSet("6,0-3,2")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println([]int(set), len(set), set.Contains(6), set.Contains(4))

	_, err = affinity.ParseCPUSet("3-1")
	fmt.Println(err)
	// Output:
	// [0 1 2 3 6] 5 true false
	// affinity: invalid CPU list "3-1": range "3-1" ends before it starts
}

func ExampleCPUSet_String() {
	fmt.Println(affinity.CPUSet{0, 1, 2, 3, 6})
	fmt.Println(affinity.CPUSet{0, 2, 3, 8, 9})
	fmt.Printf("%q\n", affinity.CPUSet{})
	// Output:
	// 0-3,6
	// 0,2-3,8-9
	// ""
}

func ExampleAllowed() {
	cpus, err := affinity.Allowed()
	if err != nil {
		fmt.Println(err) // affinity: unsupported operation, outside Linux
		return
	}
	// Under `taskset -c 0,2` this prints "2 CPUs: 0,2" whatever runtime.NumCPU says.
	fmt.Printf("%d CPUs: %s\n", len(cpus), cpus)
}

func ExamplePinThread() {
	cpus, err := affinity.Allowed()
	if err != nil {
		fmt.Println(err)
		return
	}
	done := make(chan int)
	for _, cpu := range cpus {
		go func() {
			release, err := affinity.PinThread(cpu)
			defer release() // restores the thread's mask, then unlocks it
			if err != nil {
				fmt.Println(err)
			}
			sum := 0
			for i := range 1_000_000 { // cache-hot work that stays on cpu
				sum += i
			}
			done <- sum
		}()
	}
	for range cpus {
		<-done
	}
}

func ExampleStart() {
	cmd := exec.Command("sleep", "1")
	if err := affinity.Start(cmd, affinity.CPUSet{0}); err != nil {
		fmt.Println(err)
		return
	}
	set, _ := affinity.ProcessAllowed(cmd.Process.Pid)
	fmt.Println("child runs on", set) // "child runs on 0"
	_ = cmd.Wait()
}
