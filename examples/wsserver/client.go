package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/wsbridge"
)

// session is the terminal client session. It fills every worker of the
// server with a long low-priority job, queues more low jobs behind them,
// and only then submits the urgent ones: when a worker frees up, the
// critical and high jobs run before the low ones that were waiting.
type session struct {
	fill    int         // n of the low jobs that occupy every worker
	waiting []clientJob // low jobs queued behind them
	urgent  []clientJob // submitted last, once every worker is busy
}

// clientJob is one job of the session.
type clientJob struct {
	n        int
	priority jobqueue.Priority
}

var (
	fullSession = session{
		fill:    40,
		waiting: []clientJob{{38, jobqueue.Low}, {36, jobqueue.Low}},
		urgent:  []clientJob{{34, jobqueue.High}, {25, jobqueue.Critical}, {30, jobqueue.High}},
	}
	quickSession = session{
		fill:    35,
		waiting: []clientJob{{27, jobqueue.Low}, {26, jobqueue.Low}},
		urgent:  []clientJob{{25, jobqueue.High}, {18, jobqueue.Critical}},
	}
)

// sessionJob is what the session saw of one job.
type sessionJob struct {
	id        string
	name      string // fib-recursive(n)
	priority  jobqueue.Priority
	sent      time.Time // when it was sent (this side's clock)
	acked     time.Time // when the server's ack came back: it was queued by then
	started   time.Time // its first started event (the server's clock); zero: never
	ended     time.Time // its final event
	startRank int       // 1 for the first job of the session to start, ...
}

// holdBack is how long the session keeps a line before printing it, so
// that lines print in the order of their times although acks (timed here)
// and events (timed by the server) reach it by different paths.
const holdBack = 250 * time.Millisecond

// sessionLog prints the session's lines in time order, each with its time
// in milliseconds since the session began.
type sessionLog struct {
	out   io.Writer
	t0    time.Time
	lines []logLine
	last  time.Time // of the last line printed
}

type logLine struct {
	at   time.Time
	text string
}

func (l *sessionLog) add(at time.Time, format string, args ...any) {
	l.lines = append(l.lines, logLine{at, fmt.Sprintf(format, args...)})
}

// flush prints the lines older than before, oldest first.
func (l *sessionLog) flush(before time.Time) {
	slices.SortStableFunc(l.lines, func(a, b logLine) int { return a.at.Compare(b.at) })
	i := 0
	for ; i < len(l.lines) && !l.lines[i].at.After(before); i++ {
		at := l.lines[i].at
		if at.Before(l.last) {
			at = l.last // arrived later than holdBack: keep the column ordered
		}
		l.last = at
		fmt.Fprintf(l.out, "%+7d ms  %s\n", at.Sub(l.t0).Milliseconds(), l.lines[i].text)
	}
	l.lines = slices.Delete(l.lines, 0, i)
}

// runClient is the terminal client session (see session): it prints the
// submissions (at the time each was sent; the ID is the server's ack),
// starts, progress and results in the order they happened, then the
// order in which the jobs started, and returns what it saw of each job
// when all have ended.
func runClient(ctx context.Context, out io.Writer, url string, s session, logger *slog.Logger, extra ...wsbridge.Option) ([]*sessionJob, error) {
	opts := append([]wsbridge.Option(nil), extra...)
	if logger != nil {
		opts = append(opts, wsbridge.WithLogger(logger))
	}
	c, err := wsbridge.Dial(ctx, url, opts...)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	st, err := c.Stats(ctx)
	if err != nil {
		return nil, err
	}
	workers := st.Queue.Workers
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	r := &sessionRun{c: c, log: sessionLog{out: out, t0: time.Now()}, byID: map[string]*sessionJob{}}
	defer r.log.flush(time.Now().Add(time.Hour)) // on an early return (Ctrl-C), the lines held back
	fmt.Fprintf(out, "connected to %s (%d workers)\n", url, workers)

	r.note("filling the %d workers with low %s(%d) jobs", workers, fibType, s.fill)
	var fill []*sessionJob
	for range workers {
		j, err := r.submit(ctx, clientJob{s.fill, jobqueue.Low})
		if err != nil {
			return nil, err
		}
		fill = append(fill, j)
	}
	if err := r.until(ctx, func() bool { return allStarted(fill) }); err != nil {
		return nil, err
	}
	r.note("every worker is busy: queueing %d more low jobs behind them", len(s.waiting))
	for _, cj := range s.waiting {
		if _, err := r.submit(ctx, cj); err != nil {
			return nil, err
		}
	}
	r.note("now the urgent jobs")
	for _, cj := range s.urgent {
		if _, err := r.submit(ctx, cj); err != nil {
			return nil, err
		}
	}
	if err := r.until(ctx, func() bool { return r.ended == len(r.jobs) }); err != nil {
		return nil, err
	}
	r.log.flush(time.Now().Add(time.Hour))

	order := slices.Clone(r.jobs)
	slices.SortStableFunc(order, func(a, b *sessionJob) int { return a.started.Compare(b.started) })
	fmt.Fprintln(out, "started in this order:")
	for i, j := range order {
		j.startRank = i + 1
		fmt.Fprintf(out, "  %d. %-22s %-8s submitted at %+6d ms, started at %+6d ms\n",
			i+1, j.name, j.priority, j.sent.Sub(r.log.t0).Milliseconds(), j.started.Sub(r.log.t0).Milliseconds())
	}
	return r.jobs, nil
}

// sessionRun is one session's state; one goroutine owns it.
type sessionRun struct {
	c     *wsbridge.Client
	log   sessionLog
	jobs  []*sessionJob // in submission order
	byID  map[string]*sessionJob
	ended int
}

func (r *sessionRun) note(format string, args ...any) {
	r.log.add(time.Now(), "-- "+format, args...)
}

func (r *sessionRun) submit(ctx context.Context, cj clientJob) (*sessionJob, error) {
	sent := time.Now()
	id, err := r.c.Submit(ctx, jobqueue.JobRequest{
		Type:     fibType,
		Payload:  fmt.Appendf(nil, `{"n":%d}`, cj.n),
		Priority: cj.priority,
	})
	if err != nil {
		return nil, err
	}
	j := &sessionJob{id: id, name: fmt.Sprintf("%s(%d)", fibType, cj.n), priority: cj.priority, sent: sent, acked: time.Now()}
	r.jobs = append(r.jobs, j)
	r.byID[id] = j
	r.log.add(sent, "submit    %s  %-22s %s", id, j.name, j.priority)
	return j, nil
}

// until handles events, printing lines as they become old enough, until
// done reports true.
func (r *sessionRun) until(ctx context.Context, done func() bool) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !done() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			r.log.flush(time.Now().Add(-holdBack))
		case ev, ok := <-r.c.Events():
			if !ok {
				return errors.New("connection closed before every job ended")
			}
			r.handle(ev)
		}
	}
	return nil
}

func (r *sessionRun) handle(ev jobqueue.Event) {
	j, mine := r.byID[ev.JobID]
	if !mine {
		return
	}
	switch ev.Kind {
	case jobqueue.EventStarted:
		if j.started.IsZero() {
			j.started = ev.Time
		}
		r.log.add(ev.Time, "started   %s  %-22s %s", ev.JobID, j.name, j.priority)
	case jobqueue.EventProgress:
		r.log.add(ev.Time, "progress  %s  %-22s %3.0f%% %s", ev.JobID, j.name, ev.Progress, ev.Message)
	case jobqueue.EventSucceeded:
		r.log.add(ev.Time, "result    %s  %-22s = %s", ev.JobID, j.name, ev.Result)
	case jobqueue.EventFailed, jobqueue.EventCanceled:
		r.log.add(ev.Time, "%-9s %s  %-22s %s", ev.Kind, ev.JobID, j.name, firstLine(ev.Error))
	}
	if ev.Kind.Final() && j.ended.IsZero() {
		j.ended = ev.Time
		r.ended++
	}
}

func allStarted(jobs []*sessionJob) bool {
	for _, j := range jobs {
		if j.started.IsZero() {
			return false
		}
	}
	return true
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
