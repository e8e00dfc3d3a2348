package procpool

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// errNoWorkers is why pools cannot start on Windows: os/exec cannot pass
// extra descriptors (ExtraFiles) to a child there.
var errNoWorkers = fmt.Errorf("procpool: worker processes need inherited pipes (ExtraFiles): %w", errors.ErrUnsupported)

func executable() (string, error) { return "", errNoWorkers }

func pipe(bool) (r, w *os.File, err error) { return nil, nil, errNoWorkers }

func sysProcAttr() *syscall.SysProcAttr { return nil }

func workerFiles(int) (*os.File, *os.File, []byte, error) { return nil, nil, nil, errNoWorkers }

func newJournal() (*os.File, error) { return nil, errNoWorkers }

func waitExited(int) bool { return false }

// killGroup reports false: there are no process groups to kill here.
func killGroup(int) bool { return false }

func sysRead(uintptr, []byte) (int, error) { return 0, errNoWorkers }

func sysWrite(uintptr, []byte) (int, error) { return 0, errNoWorkers }

func mapShared(*os.File) []byte { return nil }

func unmapShared([]byte) {}
