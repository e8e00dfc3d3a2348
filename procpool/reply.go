package procpool

import "encoding/binary"

// reply is a parsed result frame (repResult): the header and the gob
// section, which still aliases the frame's body.
type reply struct {
	id     uint64
	dur    int64 // handler time, ns
	status byte
	whole  itemErr   // statusError: the failure of the whole request
	errs   []itemErr // statusItems: the failed items of a chunk, in order
	out    []byte    // statusOK, statusItems: the gob section, whole messages
}

// parseReply parses the body of a result frame for a request of items
// inputs. It is a pure function of its arguments: it checks the frame
// kind, the status, the item errors (at most items of them, indexes
// increasing and below items) and that the gob section is a sequence of whole gob
// messages, or absent after a statusError; it decodes no gob. Any
// departure from the wire format is an error wrapping errCorrupt.
func parseReply(body []byte, items int) (reply, error) {
	var rep reply
	pr := parser{b: body}
	kind := pr.byte()
	rep.id = pr.uvarint()
	rep.dur = int64(min(pr.uvarint(), 1<<62))
	rep.status = pr.byte()
	if pr.err != nil {
		return reply{}, pr.err
	}
	if kind != repResult {
		return reply{}, corrupt("reply kind %d", kind)
	}
	switch rep.status {
	case statusOK:
	case statusRaw:
		if items != 1 {
			return reply{}, corrupt("raw reply to a chunk of %d", items)
		}
		rep.out = pr.b
		return rep, nil
	case statusError:
		pr.itemErr(&rep.whole, len(body))
	case statusItems:
		n := pr.count(items)
		for range n {
			e := itemErr{index: pr.count(items - 1)}
			pr.itemErr(&e, len(body))
			if pr.err != nil {
				break
			}
			if len(rep.errs) > 0 && e.index <= rep.errs[len(rep.errs)-1].index {
				return reply{}, corrupt("item %d after item %d", e.index, rep.errs[len(rep.errs)-1].index)
			}
			rep.errs = append(rep.errs, e)
		}
	default:
		return reply{}, corrupt("reply status %d", rep.status)
	}
	if pr.err != nil {
		return reply{}, pr.err
	}
	if rep.status == statusError {
		if len(pr.b) != 0 {
			return reply{}, corrupt("bytes after an error reply")
		}
		return rep, nil
	}
	if err := checkGob(pr.b); err != nil {
		return reply{}, err
	}
	rep.out = pr.b
	return rep, nil
}

// replyID returns the request ID of a result frame's body, for the
// journal's replay to skip replies that came through the pipe.
func replyID(body []byte) (uint64, error) {
	pr := parser{b: body}
	if kind := pr.byte(); pr.err == nil && kind != repResult {
		return 0, corrupt("reply kind %d", kind)
	}
	id := pr.uvarint()
	return id, pr.err
}

// appendReplyHeader appends the header of a result frame: kind, request
// ID, handler time and status; for statusItems, the failed items too.
func appendReplyHeader(b []byte, id uint64, dur int64, status byte, errs []itemErr) []byte {
	b = append(b, repResult)
	b = binary.AppendUvarint(b, id)
	b = binary.AppendUvarint(b, uint64(max(dur, 0)))
	b = append(b, status)
	if status == statusItems {
		b = binary.AppendUvarint(b, uint64(len(errs)))
		for i := range errs {
			b = binary.AppendUvarint(b, uint64(errs[i].index))
			b = appendItemErr(b, &errs[i])
		}
	}
	return b
}
