package sim

import (
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// gopcua's server leaves goroutines behind after Close when a client was connecting at that moment.
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/gopcua/opcua/server.(*channelBroker).RegisterConn"),
		goleak.IgnoreAnyFunction("github.com/gopcua/opcua/server.(*channelBroker).Close.func1"),
		goleak.IgnoreTopFunction("github.com/gopcua/opcua/server.(*Subscription).run"))
}

func snapshot(p *Plant) [][]Point {
	out := make([][]Point, len(p.Machines))
	for i, m := range p.Machines {
		out[i] = slices.Clone(m.Points)
	}
	return out
}

func equalPoints(a, b [][]Point) bool {
	for i := range a {
		if !slices.Equal(a[i], b[i]) {
			return false
		}
	}
	return len(a) == len(b)
}

func TestSameSeedSamePlant(t *testing.T) {
	cfg := Config{Seed: 42, Lines: 2, MachinesPerLine: 4, ExtraSignals: 2, Tick: time.Second, Speed: 5}
	a, b, c := NewPlant(cfg), NewPlant(cfg), NewPlant(Config{Seed: 43, Lines: 2, MachinesPerLine: 4, ExtraSignals: 2, Tick: time.Second, Speed: 5})
	for range 2000 {
		a.Step()
		b.Step()
		c.Step()
	}
	if !equalPoints(snapshot(a), snapshot(b)) {
		t.Fatal("two plants with the same seed and steps differ")
	}
	if equalPoints(snapshot(a), snapshot(c)) {
		t.Fatal("plants with different seeds are identical")
	}
}

// Adding machines or sensors must not change the existing machines' stories (one stream each).
func TestMachineStreamsAreIndependent(t *testing.T) {
	small := NewPlant(Config{Seed: 9, Lines: 1, MachinesPerLine: 3})
	big := NewPlant(Config{Seed: 9, Lines: 3, MachinesPerLine: 3})
	for range 500 {
		small.Step()
		big.Step()
	}
	for i, m := range small.Machines {
		if !slices.Equal(m.Points, big.Machines[i].Points) {
			t.Fatalf("machine %s.%s differs when the plant grows", m.Line, m.Name)
		}
	}
}

func TestStateMachineAndCounters(t *testing.T) {
	p := NewPlant(Config{Seed: 3, Lines: 2, MachinesPerLine: 3, Tick: time.Second, Speed: 10})
	type seen struct {
		states     map[string]bool
		skuChanges int
		bad        bool
		spikes     int
	}
	obs := make([]seen, len(p.Machines))
	for i := range obs {
		obs[i].states = map[string]bool{}
	}
	for range 20000 { // 200,000 simulated seconds: a couple of days of production
		before := snapshot(p)
		p.Step()
		for i, m := range p.Machines {
			prev, cur := before[i], m.Points
			o := &obs[i]
			o.states[cur[pState].S] = true
			if cur[pParts].I < prev[pParts].I {
				t.Fatalf("%s parts went backwards: %d -> %d", m.Signal("parts"), prev[pParts].I, cur[pParts].I)
			}
			if cur[pParts].I > prev[pParts].I && cur[pState].S != Running {
				t.Fatalf("%s made parts while %s", m.Signal("parts"), cur[pState].S)
			}
			if cur[pSKU].S != prev[pSKU].S {
				o.skuChanges++
				if prev[pState].S != Changeover && cur[pState].S != Running {
					t.Fatalf("%s changed SKU outside a changeover (%s -> %s)", m.Signal("sku"), prev[pState].S, cur[pState].S)
				}
			}
			if (cur[pFault].I != 0) != (cur[pState].S == Down) {
				t.Fatalf("%s fault code %d in state %s", m.Signal("fault"), cur[pFault].I, cur[pState].S)
			}
			o.bad = o.bad || cur[pTemp].Bad
			if cur[pTemp].F > 90 {
				o.spikes++
			}
		}
	}
	for i, m := range p.Machines {
		o := obs[i]
		for _, s := range []string{Running, Idle, Down, Changeover} {
			if !o.states[s] {
				t.Errorf("%s.%s never %s", m.Line, m.Name, s)
			}
		}
		if o.skuChanges == 0 {
			t.Errorf("%s.%s never changed SKU", m.Line, m.Name)
		}
		if !o.bad {
			t.Errorf("%s.%s never had a bad-quality moment", m.Line, m.Name)
		}
		if o.spikes == 0 {
			t.Errorf("%s.%s never spiked", m.Line, m.Name)
		}
	}
}

func TestScalesToTensOfThousandsOfSignals(t *testing.T) {
	p := NewPlant(Config{Seed: 1, Lines: 10, MachinesPerLine: 20, ExtraSignals: 100})
	if got, want := p.Signals(), 10*20*(basePoints+100); got != want {
		t.Fatalf("signals = %d, want %d", got, want)
	}
	p.Step()
	names := map[string]bool{}
	for _, m := range p.Machines {
		for _, pt := range m.Points {
			n := m.Signal(pt.Field)
			if names[n] {
				t.Fatalf("signal %s twice", n)
			}
			names[n] = true
		}
	}
}

func TestDefaultLayoutUsesEveryProtocol(t *testing.T) {
	p := NewPlant(DefaultConfig())
	got := map[string]Protocol{}
	for _, m := range p.Machines {
		got[DeviceID(m)] = m.Protocol
	}
	want := map[string]Protocol{"line1.press": OPCUA, "line1.weld": OPCUA, "line1.pack": Sparkplug,
		"line2.press": MQTTJSON, "line2.weld": MQTTJSON, "line2.pack": Sparkplug}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s on %q, want %q", k, got[k], v)
		}
	}
}

func TestCheckCountsMissingDuplicatesAndExtras(t *testing.T) {
	ledger := map[string]LedgerSource{"l.m": {Signals: []string{"l.m.a", "l.m.b"}, Times: []int64{10, 20, 30}}}
	c := NewCounter()
	at := func(ms int64) time.Time { return time.UnixMilli(ms) }
	for _, ms := range []int64{10, 20, 30} {
		c.Add("l.m.a", at(ms))
	}
	c.Add("l.m.b", at(10))
	c.Add("l.m.b", at(10)) // duplicate
	c.Add("l.m.b", at(25)) // not acknowledged: extra
	c.Add("l.m.b", at(30)) // 20 is missing
	c.Add("opc.x.y", at(5))
	got := Check(ledger, c)
	want := Tally{Acked: 6, Delivered: 5, Missing: 1, Duplicates: 1, Extra: 1, Other: 1}
	got.Examples = nil
	if got.String() != want.String() || got.OK() {
		t.Fatalf("Check = %s, want %s (not OK)", got, want)
	}
	if n := c.CountAfter(func(s string) bool { return s == "l.m.a" }, at(15)); n != 2 {
		t.Fatalf("CountAfter = %d, want 2", n)
	}
}

func BenchmarkStep20kSignals(b *testing.B) {
	p := NewPlant(Config{Seed: 1, Lines: 10, MachinesPerLine: 20, ExtraSignals: 93})
	b.ReportMetric(float64(p.Signals()), "signals")
	for b.Loop() {
		p.Step()
	}
}

func BenchmarkJSONPayload(b *testing.B) {
	p := NewPlant(Config{Seed: 1, Lines: 1, MachinesPerLine: 1, ExtraSignals: 20})
	m := p.Machines[0]
	var buf []byte
	for b.Loop() {
		buf = appendJSON(buf[:0], m, 1732480000123)
	}
	b.SetBytes(int64(len(buf)))
}
