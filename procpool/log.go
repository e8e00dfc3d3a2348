package procpool

import (
	"context"
	"log/slog"
	"strings"
	"syscall"
	"time"
)

// The pool's own events go to its logger (WithLogger) as messages with
// structured attributes; none of them is on a hot path.

// logger returns the WithLogger logger, or slog.Default() now.
func (p *Pool) logger() *slog.Logger {
	if p.o.logger != nil {
		return p.o.logger
	}
	return slog.Default()
}

func (p *Pool) log(level slog.Level, msg string, attrs ...slog.Attr) {
	p.logger().LogAttrs(context.Background(), level, msg, attrs...)
}

// logSpawned reports a worker process that started and said hello.
func (p *Pool) logSpawned(w *proc) {
	attrs := []slog.Attr{slog.Int("worker", w.s.id), slog.Int("pid", w.pid)}
	if w.s.cpu >= 0 {
		attrs = append(attrs, slog.Int("cpu", w.s.cpu))
	}
	p.log(slog.LevelDebug, "procpool: worker spawned", attrs...)
}

// logStartFailed reports a worker that could not be started in place of a
// dead one; the slot tries again after retry.
func (p *Pool) logStartFailed(s *slot, err error, failures int, retry time.Duration) {
	p.log(slog.LevelError, "procpool: worker start failed",
		slog.Int("worker", s.id), slog.Any("err", err),
		slog.Int("failures", failures), slog.Duration("retry_in", retry))
}

// logCrashed reports a worker that died without being asked to, and what
// became of the requests it held: failed ones returned ce to their callers,
// retried ones were queued again (WithRetry), resent ones, which had not
// started, were queued again without counting an attempt.
func (p *Pool) logCrashed(ce *CrashError, tasks, failed, retried, resent int) {
	attrs := []slog.Attr{slog.Int("worker", ce.Worker), slog.Int("pid", ce.PID)}
	if st := ce.State; st != nil {
		attrs = append(attrs, slog.String("status", st.String()), slog.Int("exit_code", st.ExitCode()))
		if ws, ok := st.Sys().(interface {
			Signaled() bool
			Signal() syscall.Signal
		}); ok && ws.Signaled() {
			attrs = append(attrs, slog.String("signal", ws.Signal().String()))
		}
	}
	if ce.Err != nil && (ce.State == nil || !isExitErr(ce.Err)) {
		attrs = append(attrs, slog.Any("err", ce.Err))
	}
	attrs = append(attrs, slog.Int("tasks", tasks), slog.Int("failed", failed), slog.Int("retried", retried), slog.Int("resent", resent))
	if line := ce.stderrLine(); line != "" {
		attrs = append(attrs, slog.String("stderr", line))
	}
	p.log(slog.LevelWarn, "procpool: worker crashed", attrs...)
}

// logEnded reports a worker that ended on the pool's request: recycled
// after WithMaxTasksPerWorker tasks, killed because a call's context ended,
// or stopped by Shutdown or Close.
func (p *Pool) logEnded(w *proc, msg string, tasks int) {
	p.log(slog.LevelDebug, msg, slog.Int("worker", w.s.id), slog.Int("pid", w.pid), slog.Int("tasks", tasks))
}

// lastLine returns the last non-empty line of s.
func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return strings.TrimSpace(s)
}
