package mqtt

import (
	"context"
	"maps"
	"slices"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Overlapping subscriptions. Every message is matched against every configured filter (receive),
// whichever subscription brought it. A broker may send one copy of a message per matching
// subscription (MQTT 3.1.1 allows it; mosquitto does with allow_duplicate_messages, its announced
// default), so subscribing to both ov/# and ov/+ would store each sample of ov/x twice. The
// collector subscribes only to the filters no other filter of it covers; a covered filter is
// subscribed when its cover is.

// filterCovers reports whether filter a matches every topic filter b matches, level by level: '#'
// covers the rest (and the parent level: a/# matches a), '+' one level that is not '#', a literal
// itself. '#' and '+' at the first level do not match $-topics (MQTT-4.7.2-1). Shared
// subscriptions ($share/<group>/...) neither cover nor are covered: the broker hands each of their
// messages to one member of the group, not to every subscriber.
func filterCovers(a, b string) bool {
	if strings.HasPrefix(a, "$share/") || strings.HasPrefix(b, "$share/") {
		return false
	}
	al, bl := strings.Split(a, "/"), strings.Split(b, "/")
	for i, l := range al {
		if l == "#" {
			return i > 0 || !strings.HasPrefix(bl[0], "$")
		}
		if i == len(bl) || bl[i] == "#" {
			return false
		}
		if l == "+" && i == 0 && strings.HasPrefix(bl[0], "$") || l != "+" && l != bl[i] {
			return false
		}
	}
	return len(al) == len(bl)
}

// findCovers records, per subscription, the subscriptions whose filter covers its filter (of
// equal filters, the first covers the others), and the QoS to subscribe it with: the highest of
// the filters it covers. Once, in New: a connection only looks them up.
func (c *Collector) findCovers() {
	c.coveredBy = make([][]int, len(c.subs))
	c.coverQoS = make([]byte, len(c.subs))
	for i, a := range c.subs {
		c.coverQoS[i] = a.qos
		for j, b := range c.subs {
			if i != j && filterCovers(a.filter, b.filter) && (a.filter != b.filter || i < j) {
				c.coveredBy[j] = append(c.coveredBy[j], i)
				c.coverQoS[i] = max(c.coverQoS[i], b.qos)
			}
		}
	}
}

// covered reports whether subscription i's filter is covered by another configured filter the
// broker did not refuse.
func (c *Collector) covered(i int, refused map[string]bool) bool {
	for _, j := range c.coveredBy[i] {
		if !refused[c.subs[j].filter] {
			return true
		}
	}
	return false
}

// subscribe subscribes to the filters no other covers. When the broker refuses one (an ACL may
// allow a/+ but not a/#), the filters it covered are subscribed in a next round; filters answered
// "packet identifier in use" are asked again until connect_timeout, then count as refused. It
// returns the filters asked for and, sorted, the configured filters that no confirmed subscription
// covers.
func (c *Collector) subscribe(ctx context.Context, cl paho.Client) (asked map[string]byte, failed []string) {
	asked = map[string]byte{}
	refused := map[string]bool{}
	retryUntil := time.Now().Add(c.cfg.ConnectTimeout) // for filters answered "packet identifier in use"
	for {
		round := map[string]byte{}
		for i, s := range c.subs {
			if _, done := asked[s.filter]; !done && !c.covered(i, refused) {
				round[s.filter] = c.coverQoS[i]
			}
		}
		if len(round) == 0 {
			break
		}
		maps.Copy(asked, round)
		no, busy, confirmed := c.waitSubscribe(ctx, cl.SubscribeMultiple(round, nil))
		if ctx.Err() != nil {
			return asked, nil
		}
		if !confirmed {
			for f := range round {
				refused[f] = true
			}
			break
		}
		if len(busy) > 0 && !retryPause(ctx, retryUntil) {
			if ctx.Err() != nil {
				return asked, nil
			}
			c.log.Error("broker refused subscription: packet identifier in use", "topics", busy)
			no, busy = append(no, busy...), nil
		}
		for _, f := range busy {
			delete(asked, f) // asked again in the next round
		}
		if len(no) == 0 && len(busy) == 0 {
			break
		}
		for _, f := range no {
			refused[f] = true
		}
	}
	granted := func(f string) bool { _, ok := asked[f]; return ok && !refused[f] }
	for i, s := range c.subs {
		ok := granted(s.filter)
		for _, j := range c.coveredBy[i] {
			ok = ok || granted(c.subs[j].filter)
		}
		if !ok {
			failed = append(failed, s.filter)
		}
	}
	c.m.subFails.Add(float64(len(failed)))
	slices.Sort(failed)
	return asked, failed
}

// retryPause waits before a SUBSCRIBE is sent again: false when that would pass deadline, or ctx
// ended.
func retryPause(ctx context.Context, deadline time.Time) bool {
	if time.Until(deadline) < subscribeRetryPause {
		return false
	}
	t := time.NewTimer(subscribeRetryPause)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
