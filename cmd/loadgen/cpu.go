package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times (100 on Linux).
const clockTicks = 100

// procCPU returns the user+system CPU time used so far by pid (0: this
// process), from /proc (Linux); an error elsewhere.
func procCPU(pid int) (time.Duration, error) {
	p := "/proc/self/stat"
	if pid > 0 {
		p = fmt.Sprintf("/proc/%d/stat", pid)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields restart after ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("%s: unexpected format", p)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("%s: unexpected format", p)
	}
	// f[0] is field 3 (state): utime is field 14, stime field 15.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%s: unexpected format", p)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// cpuSample is the CPU time of the load generator and (when known) of the
// server at one instant.
type cpuSample struct {
	at             time.Time
	self, server   time.Duration
	selfOK, servOK bool
}

func sampleCPU(serverPID int) cpuSample {
	s := cpuSample{at: time.Now()}
	var err error
	s.self, err = procCPU(0)
	s.selfOK = err == nil
	if serverPID > 0 {
		s.server, err = procCPU(serverPID)
		s.servOK = err == nil
	}
	return s
}

// CPUResult is the CPU used during the sale window, in cores (1 = one core busy).
type CPUResult struct {
	Cores         int      `json:"cores"`
	LoadgenCores  *float64 `json:"loadgen_cores,omitempty"`
	ServerCores   *float64 `json:"server_cores,omitempty"`
	WindowSeconds float64  `json:"window_s"`
}

func cpuBetween(a, b cpuSample, cores int) *CPUResult {
	w := b.at.Sub(a.at).Seconds()
	if w <= 0 || !a.selfOK || !b.selfOK {
		return nil
	}
	r := &CPUResult{Cores: cores, WindowSeconds: w}
	lg := (b.self - a.self).Seconds() / w
	r.LoadgenCores = &lg
	if a.servOK && b.servOK {
		sv := (b.server - a.server).Seconds() / w
		r.ServerCores = &sv
	}
	return r
}
