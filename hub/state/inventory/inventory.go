// Package inventory keeps the hub's inventory position per SKU × site in a JetStream KV bucket: the last
// on-hand count plus units produced minus units sold since it, with a moving-average demand rate and days of cover.
//
// # Arithmetic
//
// position = snapshot.OnHand + Σ produced − Σ sold, over movements whose event time is after the current
// snapshot's time. A movement at or before that time is already in the count (Outcome BeforeSnapshot). A
// snapshot replaces the current one only if its (Time, ID) is greater: an older one is Stale, the same one a
// Duplicate, and of two counts taken at the same instant the larger ID wins, so arrival order never matters.
//
// # Exactness and idempotence
//
// Each key's value keeps the movements of the last Config.Horizon (by the hub's clock, on event time): id,
// time and signed quantity, sorted by time. That list lets a late snapshot recompute the sum exactly and is the
// idempotence set: a movement id already in it is a Duplicate. Older movements are folded into a base when the
// key is next written; so is the oldest part of a list longer than Config.MaxMovements. A movement older than
// the horizon is applied straight to the base (Outcome AppliedUnverified). The ids of movements folded or
// applied straight to the base are remembered for the horizon after that, within the list's bound (at most
// max(32, MaxMovements − the list)), so a batch redelivered after its replica died is a Duplicate whatever its
// age; a duplicate arriving after its id was forgotten relies on the ingest layer's dedup markers (TTL ≥ 72h),
// not on this package. A snapshot whose time
// falls inside the folded span cannot be split exactly and is refused (Outcome BeyondHorizon); one after the
// whole span clears the base, one before it keeps the base. Without any snapshot the same folding applies and
// on-hand counts as 0. Movements covered by the snapshot keep their ids until the horizon, so a duplicate
// sale or return is not counted twice in the demand rate.
//
// # Demand
//
// Sales are summed per UTC day of their event time for the last Config.DemandDays days. DailyRate is the mean
// over the Config.RateWindow complete days before the writer's current day; it is computed when the key is
// written (a key without events keeps its last rate). DaysOfCover = Position / DailyRate (0 when Position ≤ 0,
// +Inf with no demand: JSON null with "no_demand": true) and StockOut = Updated + DaysOfCover days.
//
// # Concurrency
//
// Every write is Get → modify → Create (absent) or Update(revision), retried on a revision conflict, so
// replicas sharing the bucket never lose an update. Each Store keeps a small summary per key in memory, kept
// current by watching the bucket, so a write by one replica becomes readable on the others.
package inventory

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
)

// Kind says whether a movement adds stock (produced) or removes it (sold).
type Kind uint8

const (
	Produced Kind = iota + 1
	Sold
	// Returned is a sale coming back (a return): the units go back into the position, counted with
	// the stock added (Produced in the summary), and the day's demand is reduced by them.
	Returned
)

func (k Kind) String() string {
	switch k {
	case Produced:
		return "produced"
	case Sold:
		return "sold"
	case Returned:
		return "returned"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Movement is a change of stock of one SKU at one site with an identity: units produced (+) or sold (−).
type Movement struct {
	ID        string // unique event identity, e.g. "sale:<order_id>:<line>" or "prod:<agent>:<inc>:<seq>:<i>"
	SKU, Site string
	Kind      Kind      // Produced or Sold
	Qty       float64   // > 0
	Time      time.Time // event time (sale time; production window end)
	Channel   string    // sales only, optional; not stored (the demand rate is per SKU × site)
}

// Snapshot is an ERP count of the units on hand at Time.
type Snapshot struct {
	ID, SKU, Site string
	OnHand        float64 // may be negative: some ERPs report negative book stock
	Time          time.Time
}

// Outcome is what an operation did.
type Outcome uint8

const (
	Applied           Outcome = iota + 1 // changed the position (or replaced the snapshot)
	Duplicate                            // the id was already applied: nothing changed
	BeforeSnapshot                       // movement at or before the current snapshot: already in the count
	AppliedUnverified                    // movement older than the horizon, applied to the base (its id checked only against those remembered)
	Stale                                // snapshot older than the current one: ignored
	BeyondHorizon                        // snapshot inside the folded span: cannot be applied exactly, ignored
)

var outcomeNames = [...]string{"", "applied", "duplicate", "before_snapshot", "applied_unverified", "stale", "beyond_horizon"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) && o != 0 {
		return outcomeNames[o]
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// MarshalText gives the outcome's name in JSON and logs.
func (o Outcome) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// Result is the outcome of Move or Snapshot and the key's position after it.
type Result struct {
	Outcome  Outcome
	Position Position
}

// Position is the inventory position of one SKU at one site.
type Position struct {
	SKU, Site    string
	OnHand       float64   // last snapshot's count (0 without a snapshot)
	Produced     float64   // units produced after the snapshot
	Sold         float64   // units sold after the snapshot
	Position     float64   // OnHand + Produced − Sold
	SnapshotTime time.Time // zero without a snapshot
	Updated      time.Time // when the key was last written (hub clock)
	DailyRate    float64   // units sold per day, moving average
	DaysOfCover  float64   // Position / DailyRate; +Inf with no demand, 0 when out of stock
	StockOut     time.Time // Updated + DaysOfCover; zero with no demand
	Revision     uint64    // KV revision of the key
}

// NoDemand reports whether there is no demand to cover (DaysOfCover is +Inf).
func (p Position) NoDemand() bool { return math.IsInf(p.DaysOfCover, 1) }

// MarshalJSON writes days_of_cover as null with no_demand true when there is no demand (JSON has no +Inf).
func (p Position) MarshalJSON() ([]byte, error) {
	type out struct {
		SKU          string     `json:"sku"`
		Site         string     `json:"site"`
		OnHand       float64    `json:"on_hand"`
		Produced     float64    `json:"produced"`
		Sold         float64    `json:"sold"`
		Position     float64    `json:"position"`
		SnapshotTime *time.Time `json:"snapshot_time,omitempty"`
		Updated      time.Time  `json:"updated"`
		DailyRate    float64    `json:"daily_rate"`
		DaysOfCover  *float64   `json:"days_of_cover"`
		NoDemand     bool       `json:"no_demand,omitempty"`
		StockOut     *time.Time `json:"stock_out,omitempty"`
		Revision     uint64     `json:"revision"`
	}
	o := out{SKU: p.SKU, Site: p.Site, OnHand: p.OnHand, Produced: p.Produced, Sold: p.Sold, Position: p.Position,
		Updated: p.Updated, DailyRate: p.DailyRate, NoDemand: p.NoDemand(), Revision: p.Revision}
	if !p.SnapshotTime.IsZero() {
		o.SnapshotTime = &p.SnapshotTime
	}
	if !o.NoDemand {
		o.DaysOfCover = &p.DaysOfCover
	}
	if !p.StockOut.IsZero() {
		o.StockOut = &p.StockOut
	}
	return json.Marshal(o)
}

// ErrInvalid is wrapped by every error about a bad movement or snapshot (see InputError).
var ErrInvalid = errors.New("invalid input")

// ErrClosed is returned by operations on a closed Store.
var ErrClosed = errors.New("inventory: store closed")

// InputError is a movement or snapshot the store refuses, naming its id and the field at fault.
type InputError struct {
	What  string // "movement" or "snapshot"
	ID    string
	Field string
	Msg   string
}

func (e *InputError) Error() string {
	return fmt.Sprintf("inventory: %s %q: %s: %s", e.What, e.ID, e.Field, e.Msg)
}

func (e *InputError) Unwrap() error { return ErrInvalid }

// Longest SKU, site and id accepted: keys and values must stay well inside NATS's control-line and payload
// limits.
const (
	MaxNameLen = 256
	maxIDLen   = 512
)

// MaxQty bounds a movement's quantity and a count's on-hand (either sign): far beyond any real stock,
// it keeps every sum finite (a position, a day's demand) and whole units exact (below 2^53).
const MaxQty = 1e15

// Event times are stored as Unix nanoseconds, which cover MinTime to MaxTime.
var (
	MinTime = time.Date(1678, 1, 1, 0, 0, 0, 0, time.UTC)
	MaxTime = time.Date(2261, 12, 31, 0, 0, 0, 0, time.UTC)
)

func checkName(what, id, field, v string) error {
	switch {
	case v == "":
		return &InputError{what, id, field, "empty"}
	case len(v) > MaxNameLen:
		return &InputError{what, id, field, fmt.Sprintf("longer than %d bytes", MaxNameLen)}
	}
	return nil
}

func checkCommon(what, id, sku, site string, t time.Time, now time.Time, maxFuture time.Duration) error {
	switch {
	case id == "":
		return &InputError{what, id, "id", fmt.Sprintf("empty (sku %q, site %q)", sku, site)}
	case len(id) > maxIDLen:
		return &InputError{what, id[:64] + "…", "id", fmt.Sprintf("longer than %d bytes", maxIDLen)}
	}
	if err := checkName(what, id, "sku", sku); err != nil {
		return err
	}
	if err := checkName(what, id, "site", site); err != nil {
		return err
	}
	if t.IsZero() {
		return &InputError{what, id, "time", "zero"}
	}
	if t.Before(MinTime) || t.After(MaxTime) {
		return &InputError{what, id, "time", fmt.Sprintf("%s is outside 1678–2261 (Unix nanoseconds)", t.UTC().Format(time.RFC3339))}
	}
	if t.After(now.Add(maxFuture)) {
		return &InputError{what, id, "time", fmt.Sprintf("%s is more than %s ahead of the hub clock (%s)",
			t.UTC().Format(time.RFC3339Nano), maxFuture, now.UTC().Format(time.RFC3339))}
	}
	return nil
}

func (m *Movement) check(now time.Time, maxFuture time.Duration) error {
	if err := checkCommon("movement", m.ID, m.SKU, m.Site, m.Time, now, maxFuture); err != nil {
		return err
	}
	if m.Kind != Produced && m.Kind != Sold && m.Kind != Returned {
		return &InputError{"movement", m.ID, "kind", fmt.Sprintf("unknown kind %d (want produced, sold or returned)", m.Kind)}
	}
	if math.IsNaN(m.Qty) || math.IsInf(m.Qty, 0) || m.Qty <= 0 {
		return &InputError{"movement", m.ID, "qty", fmt.Sprintf("must be a finite number > 0, got %v", m.Qty)}
	}
	if m.Qty > MaxQty {
		return &InputError{"movement", m.ID, "qty", fmt.Sprintf("must be at most %g, got %v", MaxQty, m.Qty)}
	}
	return nil
}

func (s *Snapshot) check(now time.Time, maxFuture time.Duration) error {
	if err := checkCommon("snapshot", s.ID, s.SKU, s.Site, s.Time, now, maxFuture); err != nil {
		return err
	}
	if math.IsNaN(s.OnHand) || math.IsInf(s.OnHand, 0) {
		return &InputError{"snapshot", s.ID, "on_hand", fmt.Sprintf("must be finite, got %v", s.OnHand)}
	}
	if math.Abs(s.OnHand) > MaxQty {
		return &InputError{"snapshot", s.ID, "on_hand", fmt.Sprintf("must be between %g and %g, got %v", -MaxQty, MaxQty, s.OnHand)}
	}
	return nil
}
