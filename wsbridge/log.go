package wsbridge

import (
	"context"
	"log/slog"

	"github.com/gobwas/ws"
)

// This file holds the Server's logging to Config.Logger: structured records
// only, each built when its level is enabled.

// logs reports whether Config.Logger takes records of level.
func (s *Server) logs(level slog.Level) bool {
	return s.cfg.Logger != nil && s.cfg.Logger.Enabled(context.Background(), level)
}

// log sends a record to Config.Logger; check logs first.
func (s *Server) log(level slog.Level, msg string, attrs ...slog.Attr) {
	s.cfg.Logger.LogAttrs(context.Background(), level, msg, attrs...)
}

// connAttrs are the attributes that identify c in every record about it.
func (c *conn) connAttrs(extra ...slog.Attr) []slog.Attr {
	return append([]slog.Attr{
		slog.Uint64("conn", c.id),
		slog.String("remote", c.remote),
		slog.String("principal", c.p.Name),
	}, extra...)
}

// logClosed logs the end of c, with the close code of its handshake: the
// client's when it closed first, ours when we did, 1006 when no close frame
// was exchanged. cause is the error that ended c abnormally, if any.
func (c *conn) logClosed(cause error) {
	code, reason := ws.StatusAbnormalClosure, ""
	by := ""
	if c.peer != nil {
		code, reason, by = c.peer.code, c.peer.reason, "client"
	} else if sc, sr, ok := c.out.sentClose(); ok {
		code, reason, by = sc, sr, "server"
	}
	level := slog.LevelWarn
	if code == ws.StatusNormalClosure || code == ws.StatusGoingAway {
		level = slog.LevelInfo
	}
	if !c.s.logs(level) {
		return
	}
	attrs := c.connAttrs(slog.Int("code", int(code)))
	if reason != "" {
		attrs = append(attrs, slog.String("reason", reason))
	}
	if by != "" {
		attrs = append(attrs, slog.String("by", by))
	}
	if cause != nil {
		attrs = append(attrs, slog.Any("err", cause))
	}
	c.s.log(level, "wsbridge: connection closed", attrs...)
}
