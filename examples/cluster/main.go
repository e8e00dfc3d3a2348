// Command cluster shows one priority job queue shared by several worker
// processes through NATS JetStream, the way machines of a fleet would share
// it. With no arguments it runs everything in one command: an embedded NATS
// server, worker processes of this same binary (standing in for machines)
// and a producer that queues jobs of three priorities before any worker
// runs, then prints which worker ran each job and whether priority was
// honoured, all measured while it ran.
//
//	go run ./examples/cluster                          # the whole demo
//	go run ./examples/cluster demo -workers 4 -jobs 60 # the same, bigger
//
// Subcommands for real use, one process each (on one or many machines):
//
//	go run ./examples/cluster server -listen 127.0.0.1:4222 -store /tmp/queue
//	go run ./examples/cluster worker -nats nats://127.0.0.1:4222 -concurrency 4
//	go run ./examples/cluster submit -nats nats://127.0.0.1:4222 -n 100 -priority 6
//
// Three servers form a JetStream cluster (one per machine; here on one
// machine with three sets of ports); workers and producers then keep three
// copies of everything with -replicas 3:
//
//	go run ./examples/cluster server -name n1 -listen 127.0.0.1:4222 -cluster 127.0.0.1:6222 -store /tmp/n1 \
//		-routes nats-route://127.0.0.1:6222,nats-route://127.0.0.1:6223,nats-route://127.0.0.1:6224
//	(n2 and n3 the same with 4223/6223 and 4224/6224)
//	go run ./examples/cluster worker -replicas 3 -nats nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224
//
// A server listens on loopback unless it has a token: with -listen or
// -cluster beyond loopback it needs -token-file FILE (the same file for
// every server, worker and submit; clients and routes without the token are
// refused) or -insecure (a firewall guards the ports). See README.md.
//
// submit waits for its jobs and prints how many succeeded, failed or are
// still pending; it exits with status 1 if any job was lost. Ctrl-C stops
// any of them cleanly: workers finish their running jobs (the rest stay
// queued in the server), the demo stops its workers and its server.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout)
	switch {
	case errors.Is(err, errLost):
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	case errors.Is(err, errUsage):
		os.Exit(2)
	case errors.Is(err, errHelp):
		// -h: the usage is printed; asking for it is no failure.
	case err != nil:
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
}
