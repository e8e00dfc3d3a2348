package jobqueue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/robfig/cron/v3"
)

// Schedule makes a Queue submit a job at every tick of a cron expression
// or of a fixed interval: a nightly report, an hourly clean-up. Register it
// with Queue.Schedule before Start.
//
// Every process of a shared queue (the JetStream backend) may register
// the same schedule: each tick's job has an ID made from the schedule's
// name and the tick's time, so the processes that all submit it at that
// tick store one job, and the workers of any of them run it once. A tick
// that falls while no process runs the schedule is caught up at the next
// Start, by CatchUp.
type Schedule struct {
	// Name identifies the schedule in the queue: 1-40 letters, digits, '-'
	// or '_'. Each tick's job has the ID Name + "-" + the tick's UTC time
	// as 20060102T150405Z, such as "nightly-report-20261208T030000Z".
	Name string
	// Cron is a cron expression: five fields (minute, hour, day of month,
	// month, day of week), or six with seconds first; a descriptor such as
	// "@daily" or "@every 1h30m"; and an optional "CRON_TZ=Europe/Madrid "
	// prefix. It is parsed by github.com/robfig/cron/v3. Set Cron or
	// Every, not both.
	Cron string
	// Every is a fixed interval instead of Cron, of at least a second and a
	// whole number of seconds. Every process computes the same ticks (for
	// an interval that divides a day, its multiples since midnight UTC).
	Every time.Duration
	// Location is the time zone of Cron's fields (nil: UTC, so that
	// processes on machines set to other zones agree on the ticks); a
	// CRON_TZ prefix overrides it.
	Location *time.Location
	// Job is the job submitted at each tick. Its ID and UniqueKey must be
	// empty (the schedule sets the ID); its Metadata gains "schedule" (the
	// name) and "tick" (the tick's time, RFC 3339).
	Job JobRequest
	// CatchUp says what Start does with the ticks that fell since the
	// schedule last ran (see CatchUpPolicy). The zero value is CatchUpLast.
	CatchUp CatchUpPolicy
	// MaxCatchUp bounds the ticks CatchUpAll submits: the latest ones (0:
	// 100).
	MaxCatchUp int
}

// CatchUpPolicy says which missed ticks of a Schedule Start submits: those
// that fell after the last tick recorded by any process of the queue (the
// backend keeps it if it implements ScheduleStore) and before Start. A
// schedule new to the backend has missed nothing.
type CatchUpPolicy uint8

const (
	// CatchUpLast submits the latest missed tick only: a nightly report
	// missed three nights runs once, for the last night.
	CatchUpLast CatchUpPolicy = iota
	// CatchUpNone submits none: the schedule resumes at its next tick.
	CatchUpNone
	// CatchUpAll submits every missed tick, at most MaxCatchUp of them
	// (the latest), oldest first.
	CatchUpAll
)

// ScheduleStore is implemented by backends that keep, for each schedule,
// the latest tick submitted, so that a tick missed while no process ran
// is caught up at the next Start. The memory backend keeps it for the life
// of the process; the JetStream backend in its state bucket, across
// restarts and processes.
type ScheduleStore interface {
	// LastTick returns the latest tick recorded for the schedule named
	// name, and false if none has been.
	LastTick(ctx context.Context, name string) (time.Time, bool, error)
	// MarkTick records t as the schedule's latest tick, unless a later one
	// is recorded already.
	MarkTick(ctx context.Context, name string, t time.Time) error
}

// Schedule registers s: from Start until Shutdown the queue submits s.Job
// at every tick. It returns an error wrapping ErrInvalidJob for a bad
// name, expression, interval or job, and for a name registered already,
// and ErrClosed after Shutdown; it must be called before Start.
func (q *Queue) Schedule(s Schedule) error {
	sc, err := q.newSchedule(s)
	if err != nil {
		return err
	}
	q.life.Lock()
	defer q.life.Unlock()
	switch {
	case q.closed.Load():
		return ErrClosed
	case q.running:
		return fmt.Errorf("jobqueue: Schedule %q after Start", s.Name)
	}
	for _, o := range q.schedules {
		if o.s.Name == s.Name {
			return fmt.Errorf("%w: schedule %q registered twice", ErrInvalidJob, s.Name)
		}
	}
	q.schedules = append(q.schedules, sc)
	return nil
}

// scheduled is a registered Schedule with its parsed timetable.
type scheduled struct {
	s    Schedule
	next func(time.Time) time.Time // the first tick after t
}

func (q *Queue) newSchedule(s Schedule) (*scheduled, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: schedule %q: %s", ErrInvalidJob, s.Name, fmt.Sprintf(format, a...))
	}
	switch {
	case len(s.Name) > 40 || !validID(s.Name):
		return nil, bad("name is not 1-40 letters, digits, '-' or '_'")
	case (s.Cron == "") == (s.Every == 0):
		return nil, bad("set Cron or Every (one of them)")
	case s.Every != 0 && (s.Every < time.Second || s.Every%time.Second != 0):
		return nil, bad("Every %v is not a whole number of seconds, at least one", s.Every)
	case s.Job.ID != "" || s.Job.UniqueKey != "":
		return nil, bad("the job's ID and UniqueKey must be empty (the schedule sets the ID)")
	case s.CatchUp > CatchUpAll:
		return nil, bad("unknown CatchUp %d", s.CatchUp)
	case s.MaxCatchUp < 0:
		return nil, bad("negative MaxCatchUp")
	}
	if s.MaxCatchUp == 0 {
		s.MaxCatchUp = 100
	}
	// The job must be one Submit accepts (a type, a valid priority...).
	probe := s.Job
	probe.ID = tickID(s.Name, time.Unix(0, 0))
	if _, err := q.newJob(probe); err != nil {
		return nil, bad("%v", err)
	}
	sc := &scheduled{s: s}
	if s.Every != 0 {
		every := s.Every
		sc.next = func(t time.Time) time.Time { return t.Truncate(every).Add(every) }
		return sc, nil
	}
	spec, err := cronParser.Parse(s.Cron)
	if err != nil {
		return nil, bad("cron expression %q: %v", s.Cron, err)
	}
	loc := s.Location
	if loc == nil {
		loc = time.UTC
	}
	sc.next = func(t time.Time) time.Time { return spec.Next(t.In(loc)) }
	return sc, nil
}

// cronParser reads five fields, or six with seconds first, and
// descriptors (@daily, @every 1h).
var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// tickID is the ID of the job of schedule name's tick at t.
func tickID(name string, t time.Time) string {
	return name + "-" + t.UTC().Format("20060102T150405Z")
}

// runSchedules is the goroutine that submits the jobs of the registered
// schedules, from Start until ctx ends (Shutdown).
func (q *Queue) runSchedules(ctx context.Context) {
	defer q.schedWG.Done()
	store, _ := q.backend.(ScheduleStore)
	now := clockNow()
	next := make([]time.Time, len(q.schedules))
	for i, sc := range q.schedules {
		q.catchUp(ctx, store, sc, now)
		next[i] = sc.next(now)
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		soonest := 0
		for i := range next {
			if next[i].Before(next[soonest]) {
				soonest = i
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next[soonest].Sub(clockNow()))
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		now := clockNow()
		for i, sc := range q.schedules {
			if next[i].After(now) {
				continue
			}
			// One tick per wake-up: ticks skipped by a machine that slept
			// are left to the other processes, or to the next catch-up.
			tick := next[i]
			for n := sc.next(tick); !n.After(now); n = sc.next(n) {
				tick = n
			}
			q.fire(ctx, store, sc, tick)
			next[i] = sc.next(now)
		}
	}
}

// catchUp submits the ticks sc missed before now, by its policy, and
// records the latest tick.
func (q *Queue) catchUp(ctx context.Context, store ScheduleStore, sc *scheduled, now time.Time) {
	if store == nil {
		return
	}
	name := sc.s.Name
	last, ok, err := store.LastTick(ctx, name)
	if err != nil {
		q.log.Warn("schedule: reading its last tick failed; no catch-up", "schedule", name, "err", err)
		return
	}
	// The ticks after last, up to now: the latest MaxCatchUp of them.
	var missed []time.Time
	if ok {
		for t := sc.next(last); !t.After(now); t = sc.next(t) {
			missed = append(missed, t)
			if len(missed) > 2*sc.s.MaxCatchUp {
				missed = missed[len(missed)-sc.s.MaxCatchUp:]
			}
		}
	}
	if len(missed) > sc.s.MaxCatchUp {
		missed = missed[len(missed)-sc.s.MaxCatchUp:]
	}
	if !ok || len(missed) == 0 {
		if !ok {
			// New to the backend: nothing missed; later starts count from
			// the latest tick before now.
			if err := store.MarkTick(ctx, name, sc.prev(now)); err != nil {
				q.log.Warn("schedule: recording its first tick failed", "schedule", name, "err", err)
			}
		}
		return
	}
	switch sc.s.CatchUp {
	case CatchUpNone:
		q.log.Info("schedule: missed ticks skipped", "schedule", name, "missed", len(missed))
		if err := store.MarkTick(ctx, name, missed[len(missed)-1]); err != nil {
			q.log.Warn("schedule: recording its last tick failed", "schedule", name, "err", err)
		}
		return
	case CatchUpLast:
		missed = missed[len(missed)-1:]
	}
	q.log.Info("schedule: catching up", "schedule", name, "ticks", len(missed))
	for _, t := range missed {
		q.fire(ctx, store, sc, t)
	}
}

// prev returns the latest tick at or before t (at most a year back).
func (sc *scheduled) prev(t time.Time) time.Time {
	if sc.s.Every != 0 {
		return t.Truncate(sc.s.Every)
	}
	for back := time.Minute; back <= 366*24*time.Hour; back *= 4 {
		var last time.Time
		for n := sc.next(t.Add(-back)); !n.After(t); n = sc.next(n) {
			last = n
		}
		if !last.IsZero() {
			return last
		}
	}
	return t
}

// fire submits sc's job for tick and records the tick. A job stored by
// another process for the same tick is the same job: the ID is the tick's.
func (q *Queue) fire(ctx context.Context, store ScheduleStore, sc *scheduled, tick time.Time) {
	req := sc.s.Job
	req.ID = tickID(sc.s.Name, tick)
	md := make(map[string]string, len(req.Metadata)+2)
	for k, v := range req.Metadata {
		md[k] = v
	}
	md["schedule"], md["tick"] = sc.s.Name, tick.UTC().Format(time.RFC3339)
	req.Metadata = md
	// Retry a failed submission (the backend out of reach) until a little
	// before the schedule's next tick.
	deadline := sc.next(tick)
	for attempt := 0; ; attempt++ {
		sctx, cancel := context.WithDeadline(ctx, deadline)
		_, err := q.Submit(sctx, req)
		cancel()
		if err == nil {
			q.log.Debug("schedule: tick submitted", "schedule", sc.s.Name, "tick", tick, "job", req.ID)
			break
		}
		if ctx.Err() != nil || errors.Is(err, ErrClosed) || errors.Is(err, ErrInvalidJob) || !clockNow().Before(deadline) {
			q.log.Warn("schedule: submitting a tick failed", "schedule", sc.s.Name, "tick", tick, "err", err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(time.Second<<min(attempt, 4), time.Until(deadline))):
		}
	}
	if store != nil {
		if err := store.MarkTick(ctx, sc.s.Name, tick); err != nil {
			q.log.Warn("schedule: recording a tick failed", "schedule", sc.s.Name, "tick", tick, "err", err)
		}
	}
}
