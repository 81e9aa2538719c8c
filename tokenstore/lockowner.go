package tokenstore

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/google/uuid"
)

// A refresh lock row names its owner as
//
//	<uuid> host=<hostname> boot=<boot id> pid=<pid> start=<process start time>
//
// so that a process sharing the SQLite file can tell a holder that died (a
// SIGKILL leaves its row behind) from one that is still working, and take
// the lock at once instead of waiting out the lease. The start time tells a
// dead process from a new one that was given the same pid. Where the
// identity cannot be read (no /proc), the owner is the uuid alone and the
// lease is the only recovery, as before.

// processIdentity is this process's part of an owner name, read once.
var processIdentity = sync.OnceValue(func() string {
	host, err := os.Hostname()
	if err != nil {
		return ""
	}
	boot := bootID()
	start, ok := startTime(os.Getpid())
	if boot == "" || !ok {
		return ""
	}
	return fmt.Sprintf("host=%s boot=%s pid=%d start=%d", host, boot, os.Getpid(), start)
})

// newLockOwner returns a fresh owner name for one hold of a refresh lock.
func newLockOwner() string {
	if id := processIdentity(); id != "" {
		return uuid.NewString() + " " + id
	}
	return uuid.NewString()
}

func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(b))
}

// startTime is the start time of process pid in clock ticks since boot
// (field 22 of /proc/<pid>/stat).
func startTime(pid int) (uint64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name (field 2) may hold spaces and parentheses; the
	// fields after it start past the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field 22 is f[19].
	if len(f) < 20 {
		return 0, false
	}
	n, err := strconv.ParseUint(f[19], 10, 64)
	return n, err == nil
}

// ownerDead reports whether owner names a process on this machine, since
// this boot, that is no longer running. An owner it cannot judge (another
// host, no identity, no /proc) is not dead: its lease decides.
func ownerDead(owner string) bool {
	fields := map[string]string{}
	for _, f := range strings.Fields(owner) {
		if k, v, ok := strings.Cut(f, "="); ok {
			fields[k] = v
		}
	}
	host, _ := os.Hostname()
	if fields["host"] == "" || fields["host"] != host {
		return false
	}
	boot := bootID()
	if boot == "" || fields["boot"] == "" {
		return false
	}
	if fields["boot"] != boot {
		// The machine rebooted since: every process of then is gone.
		return true
	}
	pid, err := strconv.Atoi(fields["pid"])
	if err != nil || pid <= 0 {
		return false
	}
	start, err := strconv.ParseUint(fields["start"], 10, 64)
	if err != nil {
		return false
	}
	now, alive := startTime(pid)
	return !alive || now != start
}
