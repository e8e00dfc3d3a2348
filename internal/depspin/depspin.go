// Package depspin pins the module's chosen dependencies while packages land.
// It is removed once every dependency is imported by real code.
package depspin

import (
	_ "github.com/chromedp/chromedp"
	_ "github.com/gobwas/ws"
	_ "github.com/gobwas/ws/wsflate"
	_ "github.com/gobwas/ws/wsutil"
	_ "github.com/nats-io/nats-server/v2/server"
	_ "github.com/nats-io/nats.go"
	_ "github.com/nats-io/nats.go/jetstream"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/collectors"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/prometheus/client_golang/prometheus/testutil"
	_ "github.com/prometheus/common/expfmt"
	_ "github.com/shirou/gopsutil/v3/cpu"
	_ "github.com/shirou/gopsutil/v3/load"
	_ "github.com/shirou/gopsutil/v3/mem"
	_ "github.com/shirou/gopsutil/v3/process"
	_ "go.uber.org/goleak"
	_ "golang.org/x/image/draw"
	_ "golang.org/x/net/html"
	_ "golang.org/x/sync/errgroup"
	_ "golang.org/x/sync/semaphore"
	_ "golang.org/x/sys/unix"
	_ "modernc.org/sqlite"
)
