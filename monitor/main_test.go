package monitor_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/corework/corework/procpool"
)

func TestMain(m *testing.M) {
	procpool.Main() // the process pool tests start worker processes of this binary
	goleak.VerifyTestMain(m)
}
