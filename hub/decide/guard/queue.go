package guard

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// QueuePage is one page of the approval queue (PendingPage).
type QueuePage struct {
	// Requests are the page's requests still waiting, in the order they were queued.
	Requests []Request
	// Total counts the queue's entries when it was listed: the requests waiting, and any found
	// expired or decided when read, about to leave it.
	Total int
	// Next is the position to ask the next page after; 0 when nothing is queued after this page.
	Next uint64
}

// PendingPage is a page of the approval queue: the requests waiting after queue position after (0:
// from the first), oldest first, reading at most limit of its entries. The queue is listed as one
// stream of its keys (their metadata, no values), and only the page's decisions are read: a view
// costs KV reads by its limit, not by the queue.
//
// The order is the order the requests were queued: an entry's position is its revision in the bucket
// (written once, when the request is queued, and never rewritten). That is the order of their
// creation, hence of their expiry (approval.ttl after it), except a decision taken over from a
// stopped replica, queued up to claim_lease after its creation. Paging by position, not by offset,
// a request that leaves the queue between two pages (answered, expired) moves no other from one page
// to another: every request waiting is listed once, and one queued meanwhile on a later page.
//
// Like Pending, it records the expiry of a request it reads past its expiry and leaves it out, with
// an entry whose decision is gone or decided: a page may hold fewer than limit requests and still have
// a Next. It reports nothing: Expire, which walks the whole queue, reports every expiry, whichever
// call recorded it.
func (g *Guard) PendingPage(ctx context.Context, after uint64, limit int) (QueuePage, error) {
	if g.closed.Load() {
		return QueuePage{}, ErrClosed
	}
	if limit < 1 {
		return QueuePage{}, fmt.Errorf("guard: pending page: limit %d: want 1 or more", limit)
	}
	win, total, more, err := g.queueWindow(ctx, after, limit)
	if err != nil {
		return QueuePage{}, fmt.Errorf("guard: pending page: %w", err)
	}
	p := QueuePage{Total: total}
	for _, e := range win {
		q, waiting, _, _, err := g.queued(ctx, e.id, nil)
		if err != nil {
			return QueuePage{}, fmt.Errorf("guard: pending page: %w", err)
		}
		if waiting {
			p.Requests = append(p.Requests, q)
		}
	}
	if more {
		p.Next = win[len(win)-1].rev
	}
	return p, nil
}

// queueEntry is one entry of the approval queue as listed: the decision id and its position.
type queueEntry struct {
	id  string
	rev uint64
}

// queueWindow lists the queue and returns its first limit entries after position after (more: the
// queue holds others after them), and how many entries it holds.
func (g *Guard) queueWindow(ctx context.Context, after uint64, limit int) (win []queueEntry, total int, more bool, err error) {
	var listed map[string]bool
	err = g.listMeta(ctx, prefixQueue+">", func() { win, total, more, listed = nil, 0, false, map[string]bool{} }, func(e jetstream.KeyValueEntry) {
		// A key written while it is listed may come twice, the second time at a later revision.
		id := strings.TrimPrefix(e.Key(), prefixQueue)
		if e.Operation() != jetstream.KeyValuePut || listed[id] {
			return
		}
		total++
		switch {
		case e.Revision() <= after:
		case len(win) == limit:
			more = true
		default:
			listed[id] = true
			win = append(win, queueEntry{id: id, rev: e.Revision()})
		}
	})
	return win, total, more, err
}

// listMeta lists the keys matching filter (the queue's, or the bucket's), delete markers included,
// as one stream of their metadata (no values), in the order of their revisions: the last of each
// key, handed to each. A key written while it is listed may come twice. start is called before each
// attempt: a failed listing is retried from the start, for retry_for.
func (g *Guard) listMeta(ctx context.Context, filter string, start func(), each func(jetstream.KeyValueEntry)) error {
	r := g.retrier(ctx)
	for {
		start()
		err := g.listMetaOnce(ctx, filter, each)
		if err == nil {
			return nil
		}
		if err := r.Failed(err); err != nil {
			return fmt.Errorf("list %s: %w", filter, err)
		}
	}
}

func (g *Guard) listMetaOnce(ctx context.Context, filter string, each func(jetstream.KeyValueEntry)) error {
	opCtx, cancel := context.WithTimeout(ctx, g.cfg.OpTimeout)
	defer cancel()
	w, err := g.kv.WatchFiltered(opCtx, []string{filter}, jetstream.MetaOnly())
	if err != nil {
		return err
	}
	defer func() {
		_ = w.Stop()
		// An entry written meanwhile may be on its way in: the watch's delivery waits on this
		// channel until it is read, and ends (closing it) once stopped.
		go func() {
			for range w.Updates() {
			}
		}()
	}()
	for {
		select {
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return errors.New("the listing ended before its last key")
			case e == nil: // every key listed
				return nil
			}
			each(e)
		case <-opCtx.Done():
			// The listing stops short when its time is up: an error, not a short list.
			return opCtx.Err()
		}
	}
}
