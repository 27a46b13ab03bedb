package cluster

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ProcRSS is a process's resident set in KiB (/proc/PID/status).
func ProcRSS(pid int) (float64, error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			return strconv.ParseFloat(strings.Fields(line)[1], 64)
		}
	}
	return 0, fmt.Errorf("pid %d: no VmRSS", pid)
}

// ProcCPU is the CPU time a process's threads (living and exited) have
// run, exactly, in ns: its process CPU-time clock (clock_getcpuclockid(3):
// CPUCLOCK_SCHED of the whole thread group), not /proc/PID/stat's 10 ms
// ticks, which are too coarse for an idle agent.
func ProcCPU(pid int) (time.Duration, error) {
	const cpuclockSched = 2
	var ts unix.Timespec
	if err := unix.ClockGettime(int32(^pid<<3|cpuclockSched), &ts); err != nil {
		return 0, fmt.Errorf("CPU clock of pid %d: %w", pid, err)
	}
	return time.Duration(ts.Nano()), nil
}
