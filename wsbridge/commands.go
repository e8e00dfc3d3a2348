package wsbridge

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/corework/corework/jobqueue"
)

// commandSpec is one client command: decode validates the command's own
// fields of the request into cmd (nil when it has none), and run handles
// it on the connection's reader goroutine. Each command's two halves sit
// together below, in the order of the package doc. The command travels by
// value: through a function value a pointer to it would make it escape,
// an allocation per message.
type commandSpec struct {
	decode func(r *request, cmd command) (command, error)
	run    func(c *conn, cmd command)
}

// commands is the command table, by name.
var commands map[string]*commandSpec

func init() {
	commands = map[string]*commandSpec{
		cmdSubmit:      {decodeSubmit, (*conn).runSubmit},
		cmdStatus:      {decodeJobID, (*conn).runStatus},
		cmdCancel:      {decodeJobID, (*conn).runCancel},
		cmdSubscribe:   {decodeOptionalJobID, (*conn).runSubscribe},
		cmdUnsubscribe: {decodeOptionalJobID, (*conn).runUnsubscribe},
		cmdList:        {decodeList, (*conn).runList},
		cmdStats:       {decodeStats, (*conn).runStats},
		cmdPing:        {nil, (*conn).runPing},
	}
}

// submit_job {id?, task_type, data?, priority?, timeout?, max_attempts?,
// unique_key?, metadata?, run_at?, job_id?} -> ack {id, command, job_id}

func decodeSubmit(r *request, cmd command) (command, error) {
	if r.TaskType == "" {
		return cmd, errors.New("submit_job needs a task_type")
	}
	p, err := parsePriority(r.Priority)
	if err != nil {
		return cmd, err
	}
	d, err := parseTimeout(r.Timeout)
	if err != nil {
		return cmd, err
	}
	if r.MaxAttempts < 0 {
		return cmd, errors.New("max_attempts must not be negative")
	}
	cmd.job = jobqueue.JobRequest{
		ID:          r.JobID,
		Type:        r.TaskType,
		Payload:     r.Data,
		Priority:    p,
		MaxAttempts: r.MaxAttempts,
		Timeout:     d,
		UniqueKey:   r.UniqueKey,
		Metadata:    r.Metadata,
	}
	if string(cmd.job.Payload) == "null" {
		cmd.job.Payload = nil
	}
	if r.RunAt != nil {
		cmd.job.RunAt = *r.RunAt
	}
	return cmd, nil
}

// runSubmit queues the job with the connection's principal as its owner and
// its quota, and makes the connection watch it (unless it watches every
// job already). An anonymous principal's job is also tallied against its
// address's quota, under an ID chosen before the submit so that its final
// event cannot come before the tally.
func (c *conn) runSubmit(cmd command) {
	s := c.s
	req := cmd.job
	watch := !c.watchesAll()
	if watch && !c.g.reserveWatch() {
		c.sendQuota(&cmd, fmt.Sprintf("this principal watches %d jobs already", c.g.quota.MaxWatches))
		return
	}
	req.Owner = c.p.Name // the queue scopes UniqueKey and the ID to it
	req.Quota = c.g.jobQuota
	explicit := req.ID != ""
	tallied := false
	if c.g.anon {
		if !explicit {
			req.ID = s.q.NewID()
		}
		delayed := !req.RunAt.IsZero() && time.Until(req.RunAt) > 0
		var err error
		if tallied, err = s.groups.tally(c.g, req.ID, int64(len(req.Payload)), delayed); err != nil {
			if watch {
				c.g.releaseWatch()
			}
			c.sendQueueError(&cmd, err)
			return
		}
	}
	id, err := s.q.Submit(s.ctx, req)
	if tallied {
		switch {
		case err != nil || id != req.ID:
			// Refused, or deduplicated to another job by its unique key.
			s.groups.finished(req.ID)
		case explicit:
			// A resubmission may return a job that ended long ago.
			if info, err := s.q.Get(s.ctx, id); err != nil || info.State.Final() {
				s.groups.finished(req.ID)
			}
		}
	}
	if err != nil {
		if watch {
			c.g.releaseWatch()
		}
		c.sendQueueError(&cmd, err)
		return
	}
	c.reply(encodeAck(cmd.id, cmd.name, id))
	if watch {
		c.follow(id)
	}
}

// job_status {id?, job_id} -> status {id, job}

func decodeJobID(r *request, cmd command) (command, error) {
	if r.JobID == "" {
		return cmd, fmt.Errorf("%s needs a job_id", r.Command)
	}
	cmd.jobID = r.JobID
	return cmd, nil
}

func (c *conn) runStatus(cmd command) {
	info, err := c.lookup(cmd.jobID)
	if err != nil {
		c.sendQueueError(&cmd, err)
		return
	}
	c.reply(encode(statusMsg{Type: msgStatus, ID: cmd.id, Job: &info}))
}

// cancel_job {id?, job_id} -> ack {id, command, job_id}

func (c *conn) runCancel(cmd command) {
	if !c.p.Operator {
		if _, err := c.lookup(cmd.jobID); err != nil {
			c.sendQueueError(&cmd, err)
			return
		}
	}
	if err := c.s.q.Cancel(c.s.ctx, cmd.jobID); err != nil {
		c.sendQueueError(&cmd, c.hideNotFound(cmd.jobID, err))
		return
	}
	c.reply(encodeAck(cmd.id, cmd.name, cmd.jobID))
}

// subscribe {id?, job_id?} -> ack, and status {id, job} for one job
// unsubscribe {id?, job_id?} -> ack

func decodeOptionalJobID(r *request, cmd command) (command, error) {
	cmd.jobID = r.JobID // empty: every job
	return cmd, nil
}

func (c *conn) runSubscribe(cmd command) {
	s := c.s
	if cmd.jobID == "" {
		s.router.setAll(c, true)
		c.reply(encodeAck(cmd.id, cmd.name, ""))
		return
	}
	if !c.g.reserveWatch() {
		c.sendQuota(&cmd, fmt.Sprintf("this principal watches %d jobs already", c.g.quota.MaxWatches))
		return
	}
	info, err := c.lookup(cmd.jobID)
	if err != nil {
		c.g.releaseWatch()
		c.sendQueueError(&cmd, err)
		return
	}
	c.reply(encodeAck(cmd.id, cmd.name, cmd.jobID))
	c.reply(encode(statusMsg{Type: msgStatus, ID: cmd.id, Job: &info}))
	c.follow(cmd.jobID)
}

func (c *conn) runUnsubscribe(cmd command) {
	if cmd.jobID == "" {
		c.s.router.setAll(c, false)
	} else {
		c.s.router.unwatch(c, cmd.jobID)
	}
	c.reply(encodeAck(cmd.id, cmd.name, cmd.jobID))
}

// list_jobs {id?, task_type?, state?, limit?, cursor?, owner?}
// -> jobs {id, jobs, next_cursor}

// maxListLimit bounds the limit of a list_jobs.
const maxListLimit = 1000

func decodeList(r *request, cmd command) (command, error) {
	if r.State != "" {
		if err := cmd.list.State.UnmarshalText([]byte(r.State)); err != nil {
			return cmd, fmt.Errorf("unknown state %q", r.State)
		}
	}
	if r.Limit < 0 || r.Limit > maxListLimit {
		return cmd, fmt.Errorf("limit must be from 0 to %d", maxListLimit)
	}
	cmd.list.Type = r.TaskType
	cmd.list.Limit = r.Limit
	cmd.list.Cursor = r.Cursor
	cmd.list.Owner = r.Owner
	return cmd, nil
}

// runList sends one page of summaries of the caller's jobs (an operator's:
// every job, or those of "owner"), newest first, cut short when the reply
// would pass Config.ListBytes or what the principal may still queue.
func (c *conn) runList(cmd command) {
	f := cmd.list
	if !c.p.Operator {
		f.Owner = c.p.Name
	}
	limit := f.Limit
	if limit == 0 {
		limit = 100
	}
	f.Limit = limit + 1 // one more tells whether a next page exists
	f.Summary = true
	jobs, err := c.s.q.List(c.s.ctx, f)
	if err != nil {
		c.sendQueueError(&cmd, err)
		return
	}
	budget := c.s.cfg.ListBytes
	if q := c.g.quota.MaxQueuedBytes; q > 0 {
		budget = int(min(int64(budget), max(4<<10, q-c.g.queued.Load())))
	}
	c.reply(encodePage(cmd.id, jobs, limit, budget))
}

// encodePage encodes a `jobs` message with the first of jobs (at most
// limit, at least one if there is one) that fit in budget bytes, and the
// cursor of the next page if jobs were left out.
func encodePage(id json.RawMessage, jobs []jobqueue.JobInfo, limit, budget int) []byte {
	b := make([]byte, 0, 256)
	b = append(b, `{"type":"jobs"`...)
	if len(id) > 0 {
		b = append(b, `,"id":`...)
		b = append(b, id...)
	}
	b = append(b, `,"jobs":[`...)
	const tail = len(`],"next_cursor":""}`) + 64
	n := 0
	for i := range jobs {
		if n == limit {
			break
		}
		j, err := json.Marshal(&jobs[i])
		if err != nil {
			continue // a result that is not JSON; summaries have none
		}
		if n > 0 && len(b)+1+len(j)+tail > budget {
			break
		}
		if n > 0 {
			b = append(b, ',')
		}
		b = append(b, j...)
		n++
	}
	b = append(b, `],"next_cursor":`...)
	next := ""
	if n < len(jobs) && n > 0 {
		next = jobs[n-1].ID
	}
	nb, _ := json.Marshal(next)
	b = append(b, nb...)
	return append(b, '}')
}

// stats {id?, watch?} -> stats {id, bridge, queue, system?}

func decodeStats(r *request, cmd command) (command, error) {
	cmd.watch = r.Watch
	return cmd, nil
}

func (c *conn) runStats(cmd command) {
	if cmd.watch != nil {
		c.s.watchStats(c, *cmd.watch)
	}
	c.reply(c.s.statsMessage(cmd.id))
}

// ping {id?} -> pong {id, time}

func (c *conn) runPing(cmd command) {
	c.reply(encode(pongMsg{Type: msgPong, ID: cmd.id, Time: time.Now()}))
}

// Ownership.

// sees reports whether c may see and act on the job of info.
func (c *conn) sees(info *jobqueue.JobInfo) bool {
	return c.p.Operator || info.Owner == c.p.Name
}

// lookup returns job id if c may see it. Another principal's job is not
// found, with exactly the error of an unknown one.
func (c *conn) lookup(id string) (jobqueue.JobInfo, error) {
	info, err := c.s.q.Get(c.s.ctx, id)
	if err == nil && !c.sees(&info) {
		err = jobqueue.ErrNotFound
	}
	if err != nil {
		return jobqueue.JobInfo{}, c.hideNotFound(id, err)
	}
	return info, nil
}

// hideNotFound replaces an error matching jobqueue.ErrNotFound, whatever
// its text, with the one text every unknown or hidden job gets.
func (c *conn) hideNotFound(id string, err error) error {
	if errors.Is(err, jobqueue.ErrNotFound) {
		return fmt.Errorf("%w: %q", jobqueue.ErrNotFound, id)
	}
	return err
}
