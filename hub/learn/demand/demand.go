// Package demand holds daily demand series per SKU × site (× channel), built from the sales events on
// the COMMERCE stream with every sale counted once by its order id and line, as the hub's consumer does.
package demand

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/internal/jsfollow"
)

// Key names one series. Channel is "" when the channels of a SKU × site are summed (Options.ByChannel
// false): inventory, and so days of cover, is kept per SKU × site.
type Key struct {
	SKU     string `json:"sku"`
	Site    string `json:"site"`
	Channel string `json:"channel,omitempty"`
}

func (k Key) String() string {
	if k.Channel == "" {
		return k.SKU + " @ " + k.Site
	}
	return k.SKU + " @ " + k.Site + " / " + k.Channel
}

// Series is one key's units sold per day, oldest first, one value for every day of the set's range
// (zero on a day without sales).
type Series struct {
	Key    Key
	Values []float64
}

// Options shape a build.
type Options struct {
	// From and To bound the days (sale times in [From, To), read as days in Location; From is moved
	// back to its day's start, To up to the next day's start unless it is one).
	From, To time.Time
	// Location is where a day starts (default UTC).
	Location *time.Location
	// ByChannel keeps one series per channel; false sums the channels of a SKU × site.
	ByChannel bool
}

// Stats count what a build saw. Returns (negative quantities) are not demand: they are counted here
// and left out of the series (the inventory position takes them back into stock).
type Stats struct {
	Sales         int     `json:"sales"`          // sales counted into a series
	Duplicates    int     `json:"duplicates"`     // copies of a sale already counted (same order id and line)
	Returns       int     `json:"returns"`        // returns seen (not demand)
	ReturnedUnits float64 `json:"returned_units"` // their units, positive
	OutOfRange    int     `json:"out_of_range"`   // sales dated outside [From, To)
	Undecodable   int     `json:"undecodable"`    // messages on a sales subject that are not a valid sale
	Messages      int     `json:"messages"`       // stream messages read
	// Oldest is the time of the oldest sale the stream held. Days before it are not days without
	// demand but days the stream has no record of (it is younger than the range, or its max_age or
	// max_bytes dropped them), so From is moved up to Oldest's day (Trimmed). When the stream has
	// dropped messages, From is moved up to the day after that of its oldest stored sale (its first
	// message; that day is no longer whole): a sale stored later but dated earlier (a late upload) does
	// not make the days the stream lost count as days without demand.
	Oldest  time.Time `json:"oldest,omitzero"`
	Trimmed bool      `json:"trimmed,omitempty"`
}

// Set is the series of one range.
type Set struct {
	From, To time.Time // the first day's start and the day after the last's
	Days     int
	Series   map[Key]*Series
	Stats    Stats

	loc      *time.Location
	firstDay int64
	// firstStored is the time of the first sale in stream order (the oldest stored).
	firstStored time.Time
	// seen holds a 128-bit hash of each sale's identity, not the string: a year of sales is millions
	// of ids, and two independent 64-bit hashes make a false duplicate vanishingly unlikely.
	seen   map[[2]uint64]struct{}
	seeds  [2]maphash.Seed
	byChan bool
	// dropped: the stream has dropped messages, so the series start the day after firstStored's.
	dropped bool
}

// New starts an empty set over opts' range.
func New(opts Options) (*Set, error) {
	loc := opts.Location
	if loc == nil {
		loc = time.UTC
	}
	if opts.From.IsZero() || opts.To.IsZero() {
		return nil, errors.New("demand: a range needs both from and to")
	}
	from := dayStart(opts.From.In(loc))
	to := dayStart(opts.To.In(loc))
	if to.Before(opts.To.In(loc)) {
		to = to.AddDate(0, 0, 1)
	}
	days := int(civil(to) - civil(from))
	if days <= 0 {
		return nil, fmt.Errorf("demand: range %s to %s holds no day", opts.From.Format(time.RFC3339), opts.To.Format(time.RFC3339))
	}
	return &Set{From: from, To: to, Days: days, Series: map[Key]*Series{}, loc: loc, firstDay: civil(from),
		seen: map[[2]uint64]struct{}{}, seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}, byChan: opts.ByChannel}, nil
}

func dayStart(t time.Time) time.Time {
	y, m, d := t.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, t.Location())
}

// civil numbers a calendar day (independent of DST: a day is a date, not 24 hours).
func civil(t time.Time) int64 {
	y, m, d := t.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Unix() / 86400
}

// Add counts one sale, once per order id and line whatever the number of copies: the first copy
// counts, as the consumer's dedup marker makes the first copy the one applied.
func (s *Set) Add(sale commerce.Sale) {
	msgID := sale.MsgID()
	id := [2]uint64{maphash.String(s.seeds[0], msgID), maphash.String(s.seeds[1], msgID)}
	if _, dup := s.seen[id]; dup {
		s.Stats.Duplicates++
		return
	}
	s.seen[id] = struct{}{}
	if sale.IsReturn() {
		s.Stats.Returns++
		s.Stats.ReturnedUnits -= sale.Quantity
		return
	}
	day := civil(sale.Time.In(s.loc)) - s.firstDay
	if day < 0 || day >= int64(s.Days) {
		s.Stats.OutOfRange++
		return
	}
	k := Key{SKU: sale.SKU, Site: sale.Site}
	if s.byChan {
		k.Channel = sale.Channel
	}
	sr := s.Series[k]
	if sr == nil {
		sr = &Series{Key: k, Values: make([]float64, s.Days)}
		s.Series[k] = sr
	}
	sr.Values[day] += sale.Quantity
	s.Stats.Sales++
}

// Keys returns the keys in order (SKU, site, channel).
func (s *Set) Keys() []Key {
	keys := make([]Key, 0, len(s.Series))
	for k := range s.Series {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b Key) int {
		return strings.Compare(a.SKU+"\x00"+a.Site+"\x00"+a.Channel, b.SKU+"\x00"+b.Site+"\x00"+b.Channel)
	})
	return keys
}

// Source is where Build reads: the COMMERCE stream and the subject prefix of its sales.
type Source struct {
	Stream string
	Prefix string
	Logger *slog.Logger
	// Idle is how long the read waits for its next message (default 30 s): a consumer that stopped
	// delivering (its node lost, or paused) fails the build instead of holding it, and the refit
	// lock with it, until shutdown.
	Idle time.Duration
}

// onRead, in tests, sees the reading consumer before it is read.
var onRead func(jetstream.Consumer)

// Build reads every sale the stream holds (an ordered consumer on <prefix>.commerce.sales.>, from
// the stream's first message to the last one there when it starts) and returns the daily series of
// opts' range. A message that is not a valid sale is logged with its stream sequence and subject,
// counted, and skipped: the consumer dead-letters it too, so it was never applied.
//
// The whole stream is read, not only the messages stored since From: sale times and stream times
// differ (late uploads, and the simulator's accelerated clock), and the stream's max_age bounds it.
func Build(ctx context.Context, js jetstream.JetStream, src Source, opts Options) (*Set, error) {
	set, err := New(opts)
	if err != nil {
		return nil, err
	}
	lg := src.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	filter := src.Prefix + ".commerce.sales.>"
	st, err := js.Stream(ctx, src.Stream)
	if err != nil {
		return nil, fmt.Errorf("demand: stream %s: %w", src.Stream, err)
	}
	sinfo, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("demand: stream %s: %w", src.Stream, err)
	}
	set.dropped = sinfo.State.FirstSeq > 1
	// The read ends at the stream's last message when it starts: sales stored meanwhile are today's
	// (after the range), and a read that followed them might not catch up under a steady flow.
	end := sinfo.State.LastSeq
	cons, err := js.OrderedConsumer(ctx, src.Stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return nil, fmt.Errorf("demand: read stream %s (%s): %w", src.Stream, filter, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("demand: stream %s (%s): %w", src.Stream, filter, err)
	}
	if info.NumPending == 0 {
		return set, nil
	}
	if onRead != nil {
		onRead(cons)
	}
	idle := src.Idle
	if idle <= 0 {
		idle = 30 * time.Second
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(batchSize))
	if err != nil {
		return nil, fmt.Errorf("demand: read stream %s: %w", src.Stream, err)
	}
	defer it.Stop()
	// Decoding a sale (strict JSON, every field checked as the consumer checks it) costs far more than
	// reading it: batches are decoded on every CPU, then added in stream order, so the first copy of a
	// sale is still the one that counts.
	batch := make([]raw, 0, batchSize)
	for {
		m, err := jsfollow.NextWithin(ctx, it, idle)
		if err != nil {
			return nil, fmt.Errorf("demand: read stream %s after %d messages of %d pending: %w", src.Stream, set.Stats.Messages, info.NumPending, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return nil, fmt.Errorf("demand: stream %s: message metadata: %w", src.Stream, err)
		}
		past := md.Sequence.Stream > end
		if !past {
			batch = append(batch, raw{subject: m.Subject(), data: m.Data(), seq: md.Sequence.Stream})
		}
		last := past || md.NumPending == 0 || md.Sequence.Stream == end
		if len(batch) == batchSize || last {
			set.addBatch(decodeAll(batch), src.Stream, lg)
			batch = batch[:0]
		}
		if last {
			set.trim(lg)
			return set, nil
		}
	}
}

const batchSize = 1000

// raw is a stream message to decode.
type raw struct {
	subject string
	data    []byte
	seq     uint64
	sale    commerce.Sale
	err     error
}

// decodeAll decodes the batch in place on every CPU.
func decodeAll(batch []raw) []raw {
	workers := min(runtime.GOMAXPROCS(0), len(batch))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(batch); i += workers {
				batch[i].sale, batch[i].err = commerce.DecodeSale(batch[i].subject, batch[i].data)
			}
		})
	}
	wg.Wait()
	return batch
}

func (s *Set) addBatch(batch []raw, stream string, lg *slog.Logger) {
	for i := range batch {
		r := &batch[i]
		s.Stats.Messages++
		if r.err != nil {
			s.Stats.Undecodable++
			lg.Warn("demand: not a sale, skipped", "stream", stream, "seq", r.seq, "subject", r.subject, "err", r.err)
			continue
		}
		if s.Stats.Oldest.IsZero() || r.sale.Time.Before(s.Stats.Oldest) {
			s.Stats.Oldest = r.sale.Time
		}
		if s.firstStored.IsZero() {
			s.firstStored = r.sale.Time
			if s.dropped {
				// The start is known now: cut before any series is made, so that each holds the
				// days the stream keeps, not the whole range (3,650 days of a 30-day stream).
				s.trim(lg)
			}
		}
		s.Add(r.sale)
	}
}

// trim moves From up to the oldest sale's day (when the stream dropped messages, the day after its
// oldest stored sale's), when that is later. Again, it changes nothing.
func (s *Set) trim(lg *slog.Logger) {
	if s.Stats.Oldest.IsZero() {
		return
	}
	cut := civil(s.Stats.Oldest.In(s.loc)) - s.firstDay
	if s.dropped {
		cut = civil(s.firstStored.In(s.loc)) - s.firstDay + 1
	}
	cut = min(cut, int64(s.Days)-1) // keep the last day: a set needs one
	if cut <= 0 {
		return
	}
	lg.Info("demand: the stream holds no sales before the range's start; the series start later",
		"from", s.From, "oldest_sale", s.Stats.Oldest, "oldest_stored_sale", s.firstStored, "dropped", s.dropped, "days_cut", cut)
	s.From = s.From.AddDate(0, 0, int(cut))
	s.firstDay += cut
	s.Days -= int(cut)
	s.Stats.Trimmed = true
	for _, sr := range s.Series {
		sr.Values = sr.Values[cut:]
	}
}

// ByChannel reports whether the set keeps one series per channel.
func (s *Set) ByChannel() bool { return s.byChan }
