package inventory

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

func randomState(r *rand.Rand) *state {
	st := &state{onHand: float64(r.IntN(1000)) - 100, updated: t0.UnixNano(), rate: r.Float64() * 10}
	if r.IntN(2) == 0 {
		st.hasSnap, st.snapID, st.snapT = true, fmt.Sprintf("erp:%d", r.IntN(1e6)), t0.Add(-time.Duration(r.IntN(1e6))*time.Second).UnixNano()
	}
	if r.IntN(2) == 0 {
		st.hasBase, st.baseProd, st.baseSold = true, float64(r.IntN(1e6)), r.Float64()*1e3
		st.baseMin, st.baseMax = t0.Add(-72*time.Hour).UnixNano(), t0.Add(-50*time.Hour).UnixNano()
	}
	tm := t0.Add(-47 * time.Hour).UnixNano()
	for i := range r.IntN(50) {
		tm += r.Int64N(int64(time.Hour))
		q := float64(1 + r.IntN(100))
		switch r.IntN(4) {
		case 0:
			q = -q
		case 1:
			q = r.NormFloat64() * 1e9
		}
		st.moves = append(st.moves, move{id: fmt.Sprintf("sale:%d:%d", r.IntN(1e9), i), t: tm, q: q})
	}
	for d := range r.IntN(14) {
		st.days = append(st.days, dayQty{unixDay(t0.UnixNano()) - 13 + int64(d), float64(r.IntN(100))})
	}
	for i := range r.IntN(5) {
		st.recent = append(st.recent, gone{fmt.Sprintf("old:%d", i), t0.Unix() - int64(r.IntN(100000))})
	}
	st.produced, st.sold = math.Pi, -0.5
	return st
}

func TestCodecRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 300 {
		st := randomState(r)
		b := st.encode(nil)
		got, err := decodeState(b)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, st) {
			t.Fatalf("case %d: round trip\n got %+v\nwant %+v", i, got, st)
		}
		sum, err := decodeSummary(b)
		if err != nil || sum != st.summary() {
			t.Fatalf("case %d: summary %+v %v, want %+v", i, sum, err, st.summary())
		}
		// Every truncation is an error, never a panic or a silently shorter state.
		for n := range len(b) {
			if _, err := decodeState(b[:n]); err == nil {
				t.Fatalf("case %d: truncated to %d of %d bytes decodes", i, n, len(b))
			}
		}
	}
	for _, v := range []float64{0, 1, -1, 1 << 53, -(1 << 53), 1<<53 + 2, 0.1, math.MaxFloat64, math.SmallestNonzeroFloat64, math.Inf(1)} {
		d := dec[[]byte]{s: appendNum(nil, v)}
		if got := d.num(); got != v || d.err != nil {
			t.Errorf("number %v decodes as %v (%v)", v, got, d.err)
		}
	}
}

func TestCodecRejectsGarbage(t *testing.T) {
	for _, b := range [][]byte{nil, {}, {2}, {1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, []byte(`{"json":1}`)} {
		if _, err := decodeState(b); err == nil {
			t.Errorf("%q decodes", b)
		}
		if _, err := decodeSummary(b); err == nil {
			t.Errorf("summary of %q decodes", b)
		}
	}
	// A huge count must fail on the length check, not allocate.
	st := &state{updated: 1}
	b := st.encode(nil)
	b = append(b[:len(b)-3], 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0)
	if _, err := decodeState(b); err == nil || !strings.Contains(err.Error(), "count beyond") {
		t.Errorf("huge count: %v", err)
	}
}

// TestCodecRecentWithoutTimes: a value written before the remembered ids had times is read, its ids
// taken as remembered when the value was last updated. A value with times is one a release that
// does not know them reads and rewrites: each time is inside its id's string, the flag tells.
func TestCodecRecentWithoutTimes(t *testing.T) {
	st := &state{updated: t0.UnixNano(), onHand: 5}
	b := st.encode(nil)
	b = b[:len(b)-1] // the empty list of remembered ids
	b = binary.AppendUvarint(b, 2)
	b = appendStr(appendStr(b, "old:1"), "old:2")
	got, err := decodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := []gone{{"old:1", t0.Unix()}, {"old:2", t0.Unix()}}; !reflect.DeepEqual(got.recent, want) || got.onHand != 5 {
		t.Errorf("value without times read as %+v", got)
	}
	got.recent[1].at += 60
	v := got.encode(nil)
	if v[0] != valueVersion || v[1]&flagRecentTimes == 0 {
		t.Errorf("written back as version %d flags %b", v[0], v[1])
	}
	// What an earlier release reads: the same layout with opaque ids, the times' flag unknown to it.
	old := append([]byte(nil), v...)
	old[1] &^= flagRecentTimes
	earlier, err := decodeState(old)
	if err != nil || len(earlier.recent) != 2 || earlier.onHand != 5 || !strings.HasSuffix(earlier.recent[1].id, "old:2") {
		t.Errorf("an earlier release reads %+v, %v", earlier, err)
	}
}

func FuzzDecodeState(f *testing.F) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 8 {
		f.Add(randomState(r).encode(nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decodeState(b)
		if err != nil {
			return
		}
		// Compare encodings, not structs: a NaN quantity is legal in the format and never DeepEqual.
		b1 := st.encode(nil)
		again, err := decodeState(b1)
		if err != nil || !bytes.Equal(again.encode(nil), b1) {
			t.Fatalf("re-encoding a decoded value: %v", err)
		}
	})
}

// TestValueSize measures the binary value against JSON of the same state (typical key: a snapshot, 200
// movements of whole units with realistic ids, 14 demand days) and keeps the binary form the smaller.
func TestValueSize(t *testing.T) {
	st := &state{hasSnap: true, snapID: "erp:2026-06-15:0001", snapT: t0.Add(-10 * time.Hour).UnixNano(), onHand: 1200, updated: t0.UnixNano()}
	tm := t0.Add(-47 * time.Hour).UnixNano()
	for i := range 200 {
		tm += int64(14 * time.Minute)
		id, q := fmt.Sprintf("sale:ORD-%08d:%d", 4_000_000+i*7, i%3), -float64(1+i%4)
		if i%4 == 0 {
			id, q = fmt.Sprintf("prod:agent-line-%02d:%d:%d:%d", i%3, 7, 100_000+i, 0), 12
		}
		st.moves = append(st.moves, move{id: id, t: tm, q: q})
	}
	for d := range 14 {
		st.days = append(st.days, dayQty{unixDay(t0.UnixNano()) - 13 + int64(d), float64(40 + d)})
	}
	st.finish(newClock(&Config{Horizon: 48 * time.Hour, DemandDays: 14, RateWindow: 7, MaxMovements: 4096}, t0))
	bin := st.encode(nil)
	type jm struct {
		ID  string  `json:"id"`
		T   int64   `json:"t"`
		Qty float64 `json:"q"`
	}
	type jd struct {
		Day int64   `json:"d"`
		Qty float64 `json:"q"`
	}
	j := struct {
		SnapID   string  `json:"snap_id"`
		SnapT    int64   `json:"snap_t"`
		OnHand   float64 `json:"on_hand"`
		Produced float64 `json:"produced"`
		Sold     float64 `json:"sold"`
		Rate     float64 `json:"rate"`
		Updated  int64   `json:"updated"`
		Moves    []jm    `json:"moves"`
		Days     []jd    `json:"days"`
	}{SnapID: st.snapID, SnapT: st.snapT, OnHand: st.onHand, Produced: st.produced, Sold: st.sold, Rate: st.rate, Updated: st.updated}
	for _, m := range st.moves {
		j.Moves = append(j.Moves, jm{m.id, m.t, m.q})
	}
	for _, d := range st.days {
		j.Days = append(j.Days, jd{d.day, d.q})
	}
	js, _ := json.Marshal(j)
	t.Logf("value with %d movements: binary %d bytes (%.1f per movement), JSON %d bytes", len(st.moves), len(bin), float64(len(bin))/float64(len(st.moves)), len(js))
	if len(bin) >= len(js)*2/3 {
		t.Errorf("binary value %d bytes is not clearly smaller than JSON %d bytes", len(bin), len(js))
	}
}

var kvKeyRe = regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`)

func TestKeyEscaping(t *testing.T) {
	pairs := [][2]string{
		{"S1", "SKU-001"}, {"Plant 1", "A.B=C"}, {"a.b", "c"}, {"a", "b.c"}, {"ü", "日本"}, {"*", ">"},
		{"=2E", "."}, {"..", "x"}, {"site/with/slash", "sku_1"}, {"\x00", "\xff"},
	}
	seen := map[string][2]string{}
	for _, p := range pairs {
		k := keyOf(p[0], p[1])
		if !kvKeyRe.MatchString(k) || strings.HasPrefix(k, ".") || strings.HasSuffix(k, ".") || strings.Contains(k, "..") || strings.Count(k, ".") != 1 {
			t.Errorf("%q × %q: key %q is not a valid single-dot KV key", p[0], p[1], k)
		}
		if q, dup := seen[k]; dup {
			t.Errorf("%q and %q share key %q", p, q, k)
		}
		seen[k] = p
		site, sku, err := splitKey(k)
		if err != nil || site != p[0] || sku != p[1] {
			t.Errorf("%q: split gives %q %q %v", k, site, sku, err)
		}
	}
	if k := keyOf("Plant 1", "A.B=C"); k != "Plant=201.A=2EB=3DC" {
		t.Errorf("documented example: %q", k)
	}
	for _, bad := range []string{"nodot", "a.b.c", ".x", "x.", "a.=4", "a.=G0", "a.=2"} {
		if _, _, err := splitKey(bad); err == nil {
			t.Errorf("splitKey(%q) accepted", bad)
		}
	}
}

func FuzzKeyEscaping(f *testing.F) {
	f.Add("S1", "SKU")
	f.Add("a.b", "=")
	f.Fuzz(func(t *testing.T, site, sku string) {
		if site == "" || sku == "" {
			return
		}
		k := keyOf(site, sku)
		if !kvKeyRe.MatchString(k) || strings.Count(k, ".") != 1 {
			t.Fatalf("invalid key %q", k)
		}
		s, k2, err := splitKey(k)
		if err != nil || s != site || k2 != sku {
			t.Fatalf("%q: %q %q %v", k, s, k2, err)
		}
	})
}

// TestValueSizeFrequentCounts measures the value of a busy key over five days of the hub clock: a
// count every hour, a sale every 5 minutes and (busy) the production of a line every minute. Ids of
// movements that left the list are kept for the horizon after, within the list's bound: the value
// never holds more ids than a full list and recentCap.
func TestValueSizeFrequentCounts(t *testing.T) {
	for _, prod := range []time.Duration{0, 10 * time.Minute, time.Minute} {
		cfg := DefaultConfig()
		st := &state{}
		var most, ids, recent, moves int
		start := t0.Add(-5 * 24 * time.Hour)
		for now := start; now.Before(t0); now = now.Add(time.Minute) {
			c := newClock(&cfg, now)
			i := int(now.Sub(start) / time.Minute)
			st.remembered = 0 // per operation, as decoding the value gives
			if prod > 0 && i%int(prod/time.Minute) == 0 {
				st.applyMove(&Movement{ID: fmt.Sprintf("prod:agent-line-01:line1.pack.parts:SKU-0001:%d", now.UnixNano()),
					Kind: Produced, Qty: 12, Time: now}, c)
			}
			if i%5 == 0 {
				st.applyMove(&Movement{ID: fmt.Sprintf("sale:ORD-%08d:1", 4_000_000+i), Kind: Sold, Qty: float64(1 + i%3), Time: now}, c)
			}
			if i%60 == 0 {
				st.applySnapshot(&Snapshot{ID: fmt.Sprintf("erp:count:%d", i), OnHand: 1000, Time: now.Add(-time.Minute)}, c)
			}
			if n := len(st.moves) + len(st.recent); n > cfg.MaxMovements+recentCap {
				t.Fatalf("%d ids kept (%d + %d remembered at minute %d), more than max_movements %d + %d", n, len(st.moves), len(st.recent), i, cfg.MaxMovements, recentCap)
			}
			if i%60 == 0 {
				if b := len(st.encode(nil)); b > most {
					most, ids, recent, moves = b, len(st.moves)+len(st.recent), len(st.recent), len(st.moves)
				}
			}
		}
		t.Logf("production every %v: largest value %d bytes (%d movements in the list, %d remembered ids, %.1f bytes per id)",
			prod, most, moves, recent, float64(most)/float64(ids))
	}
}
