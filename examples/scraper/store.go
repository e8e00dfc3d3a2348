package main

import (
	"context"
	"database/sql"
	"fmt"
	"iter"
	"time"

	_ "modernc.org/sqlite" // registers the pure-Go "sqlite" driver
)

// schema is the one table the scraper keeps: one row per URL, replaced on
// every fetch. error is NULL when the fetch succeeded; status is 0 when no
// HTTP response arrived at all.
const schema = `
CREATE TABLE IF NOT EXISTS pages (
	url         TEXT    PRIMARY KEY,
	title       TEXT    NOT NULL DEFAULT '',
	status      INTEGER NOT NULL DEFAULT 0,
	bytes       INTEGER NOT NULL DEFAULT 0,
	duration_ms REAL    NOT NULL DEFAULT 0,
	fetched_at  TEXT    NOT NULL,
	error       TEXT,
	fetches     INTEGER NOT NULL DEFAULT 1
) STRICT`

// upsert inserts a page or, if its URL is already there, overwrites the
// row with the newer fetch and counts it.
const upsert = `
INSERT INTO pages (url, title, status, bytes, duration_ms, fetched_at, error)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(url) DO UPDATE SET
	title       = excluded.title,
	status      = excluded.status,
	bytes       = excluded.bytes,
	duration_ms = excluded.duration_ms,
	fetched_at  = excluded.fetched_at,
	error       = excluded.error,
	fetches     = pages.fetches + 1`

// store is the scraper's SQLite database. It is used from one goroutine at a
// time and holds a single connection, so writes never wait on SQLite's
// file lock (SQLITE_BUSY) within the process; busy_timeout covers another
// process holding the file.
type store struct {
	db *sql.DB
}

// openStore opens (creating if needed) the database at path and its table.
func openStore(ctx context.Context, path string) (*store, error) {
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)")
	if err != nil {
		return nil, fmt.Errorf("scraper: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("scraper: create table in %s: %w", path, err)
	}
	return &store{db: db}, nil
}

func (s *store) close() error { return s.db.Close() }

// saveAll upserts every page that results yields, in one transaction, and
// returns the pages it saved. It stops at the first error that results
// yields (ctx ending), commits what it has saved so far and returns that
// error. The transaction does not end with ctx, so an interrupt keeps the
// rows already fetched.
func (s *store) saveAll(ctx context.Context, results iter.Seq2[page, error]) ([]page, error) {
	ctx = context.WithoutCancel(ctx)
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("scraper: begin: %w", err)
	}
	defer tx.Rollback() // a no-op after Commit
	stmt, err := tx.PrepareContext(ctx, upsert)
	if err != nil {
		return nil, fmt.Errorf("scraper: prepare upsert: %w", err)
	}
	defer stmt.Close()

	var saved []page
	var stop error
	for p, err := range results {
		if err != nil {
			stop = err
			break
		}
		var errText sql.NullString
		if p.Err != "" {
			errText = sql.NullString{String: p.Err, Valid: true}
		}
		if _, err := stmt.ExecContext(ctx, p.URL, p.Title, p.Status, p.Bytes,
			float64(p.Duration)/float64(time.Millisecond), p.FetchedAt.UTC().Format(time.RFC3339Nano), errText); err != nil {
			return saved, fmt.Errorf("scraper: save %s: %w", p.URL, err)
		}
		saved = append(saved, p)
	}
	if err := tx.Commit(); err != nil {
		return saved, fmt.Errorf("scraper: commit: %w", err)
	}
	return saved, stop
}

// count returns the number of rows in the table.
func (s *store) count(ctx context.Context) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pages`).Scan(&n); err != nil {
		return 0, fmt.Errorf("scraper: count: %w", err)
	}
	return n, nil
}

// largest returns up to n successfully fetched pages, largest first.
func (s *store) largest(ctx context.Context, n int) ([]page, error) {
	rows, err := s.db.QueryContext(ctx,
		`SELECT url, title, status, bytes FROM pages WHERE error IS NULL ORDER BY bytes DESC, url LIMIT ?`, n)
	if err != nil {
		return nil, fmt.Errorf("scraper: query: %w", err)
	}
	defer rows.Close()
	var out []page
	for rows.Next() {
		var p page
		if err := rows.Scan(&p.URL, &p.Title, &p.Status, &p.Bytes); err != nil {
			return nil, fmt.Errorf("scraper: scan: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("scraper: query: %w", err)
	}
	return out, nil
}
