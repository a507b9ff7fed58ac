package inventory

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/natstest"
)

// BenchmarkMove measures one movement end to end (Get, apply, Update, view) on an embedded server:
// on fresh keys (Create), spread over 1,000 keys from parallel goroutines, and on one hot key whose list
// grows (each write rewrites the whole value).
func BenchmarkMove(b *testing.B) {
	srv := natstest.JetStream(b)
	clock := newTestClock(t0)
	cfg := testConfig(clock)
	cfg.MaxMovements = 1000
	s := openStore(b, connectJS(b, srv.URL()), cfg)
	ctx := context.Background()
	var seq atomic.Int64
	next := func(sku string) Movement {
		i := seq.Add(1)
		return Movement{ID: fmt.Sprintf("sale:ORD-%08d:1", i), SKU: sku, Site: "S1", Kind: Sold, Qty: 1,
			Time: t0.Add(-time.Duration(i%40000) * time.Second)}
	}
	b.Run("new-keys", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if _, err := s.Move(ctx, next(fmt.Sprintf("NEW-%d", i))); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("1000-keys-parallel", func(b *testing.B) {
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Move(ctx, next(fmt.Sprintf("K-%d", seq.Load()%1000))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("one-key-1000-movements", func(b *testing.B) {
		for range 1000 { // fill the list to its bound first
			if _, err := s.Move(ctx, next("HOT")); err != nil {
				b.Fatal(err)
			}
		}
		for b.Loop() {
			if _, err := s.Move(ctx, next("HOT")); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// viewFixture fills a view with sites × skus summaries, keys as the store writes them.
func viewFixture(sites, skus int) *view {
	v := newView(sites * skus)
	rev := uint64(0)
	for site := range sites {
		for sku := range skus {
			rev++
			v.put(keyOf(fmt.Sprintf("SITE-%d", site+1), fmt.Sprintf("SKU-%06d", sku)),
				summary{onHand: 100, produced: 12, sold: 7.5, rate: 3.25, snapT: t0.UnixNano(), updated: t0.UnixNano(), rev: rev})
		}
	}
	return v
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// A view opened without a size hint grows its index as keys arrive: every key is found again, with
// its latest revision, and an unknown key is not found.
func TestViewGrows(t *testing.T) {
	v := newView(0)
	const n = 5000
	for rev := uint64(1); rev <= 2; rev++ {
		for i := range n {
			v.put(keyOf("S1", fmt.Sprintf("SKU-%d", i)), summary{onHand: float64(i) + float64(rev), rev: rev})
		}
	}
	v.put(keyOf("S1", "SKU-7"), summary{onHand: -1, rev: 1}) // older: ignored
	if v.len() != n {
		t.Fatalf("%d keys, want %d", v.len(), n)
	}
	for i := range n {
		s, ok := v.get(keyOf("S1", fmt.Sprintf("SKU-%d", i)))
		if !ok || s.rev != 2 || s.onHand != float64(i)+2 {
			t.Fatalf("SKU-%d: %+v, %v", i, s, ok)
		}
	}
	if _, ok := v.get(keyOf("S1", "SKU-X")); ok {
		t.Error("an unknown key was found")
	}
	if got := len(v.slots); got*3 < n*4 || got&(got-1) != 0 {
		t.Errorf("%d slots for %d keys: want a power of two at least 4/3 of them", got, n)
	}
}

// TestViewMemory measures the in-memory view for 100,000 SKUs × 3 sites and bounds it per key.
func TestViewMemory(t *testing.T) {
	before := heapInUse()
	v := viewFixture(3, 100_000)
	v.sorted()
	after := heapInUse()
	per := float64(after-before) / float64(v.len())
	t.Logf("view of %d keys: %.1f MiB, %.0f bytes per key", v.len(), float64(after-before)/(1<<20), per)
	if per > 125 { // 147 with a map[string]int32 as the index, 107 with the table of int32
		t.Errorf("%.0f bytes per key in the view, want ≤ 125", per)
	}
	if p := v.list(Filter{Site: "SITE-2", AfterSite: "SITE-2", AfterSKU: "SKU-099998"}); len(p) != 1 || p[0].SKU != "SKU-099999" {
		t.Errorf("list at the end of SITE-2: %+v", p)
	}
	runtime.KeepAlive(v)
}

func BenchmarkViewGet(b *testing.B) {
	v := viewFixture(3, 100_000)
	k := keyOf("SITE-2", "SKU-012345")
	for b.Loop() {
		if _, ok := v.get(k); !ok {
			b.Fatal("missing")
		}
	}
}

func rss() (cur, peak float64) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, val, _ := strings.Cut(sc.Text(), ":")
		kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 64)
		switch name {
		case "VmRSS":
			cur = kb / 1024
		case "VmHWM":
			peak = kb / 1024
		}
	}
	return cur, peak
}

// BenchmarkOpen300k is the memory target: 100,000 SKUs × 3 sites of inventory state in a bucket, loaded by
// a fresh process (this test binary re-run) that starts an embedded server on the store and opens the Store.
// It reports that process's load time and RSS, right after Open and once the server's block caches have
// expired. Run with -benchtime=1x.
func BenchmarkOpen300k(b *testing.B) {
	const sites, skus = 3, 100_000
	dir := b.TempDir()
	func() {
		o := natstest.Options(b)
		o.StoreDir = dir // where the measured process finds the bucket
		srv := natstest.Start(b, o)
		defer srv.Stop()
		js := connectJS(b, srv.URL())
		cfg := DefaultConfig()
		ctx := context.Background()
		if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: cfg.Bucket, History: 1, Storage: jetstream.FileStorage}); err != nil {
			b.Fatal(err)
		}
		val := typicalValue(&cfg)
		b.Logf("value of a typical key: %d bytes", len(val))
		for i := range sites * skus {
			subj := "$KV." + cfg.Bucket + "." + keyOf(fmt.Sprintf("SITE-%d", i/skus+1), fmt.Sprintf("SKU-%06d", i%skus))
			if _, err := js.PublishAsync(subj, val); err != nil {
				b.Fatal(err)
			}
			if i%2000 == 1999 {
				select {
				case <-js.PublishAsyncComplete():
				case <-time.After(time.Minute):
					b.Fatal("publishing the fixture timed out")
				}
			}
		}
	}()
	for b.Loop() {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), hubProcessEnv+"="+dir)
		if l := os.Getenv("HUB_GOMEMLIMIT"); l != "" { // a memory limit for the measured process only
			cmd.Env = append(cmd.Env, "GOMEMLIMIT="+l)
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("hub process: %v\n%s", err, out)
		}
		_, line, ok := strings.Cut(string(out), "HUBPROCESS ")
		if !ok {
			b.Fatalf("hub process said:\n%s", out)
		}
		for _, f := range strings.Fields(line) {
			name, v, _ := strings.Cut(f, "=")
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("hub process metric %q", f)
			}
			b.ReportMetric(x, name)
		}
	}
}

const hubProcessEnv = "GEMBA_INVENTORY_HUB_PROCESS"

// typicalValue is a key with a count, a dozen sales since and a few days of demand.
func typicalValue(cfg *Config) []byte {
	c := newClock(cfg, t0)
	st := &state{}
	st.applySnapshot(&Snapshot{ID: "erp:2026-06-15:0001", SKU: "x", Site: "y", OnHand: 250, Time: t0.Add(-20 * time.Hour)}, c)
	for i := range 12 {
		m := Movement{ID: fmt.Sprintf("sale:ORD-%08d:1", 4_000_000+i), SKU: "x", Site: "y", Kind: Sold, Qty: 2, Time: t0.Add(-time.Duration(i) * 3 * time.Hour)}
		st.applyMove(&m, c)
	}
	return st.encode(nil)
}

// hubProcess is the measured process: an embedded server on dir and an opened Store, nothing else.
func hubProcess(dir string) int {
	// Not natstest: this is a process of its own, without a test to fail or clean up.
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		fmt.Println(err)
		return 1
	}
	go srv.Start()
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	if !srv.ReadyForConnections(30 * time.Second) {
		fmt.Println("server not ready")
		return 1
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	start := time.Now()
	s, err := Open(context.Background(), js, DefaultConfig(), nil)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer s.Close()
	load := time.Since(start)
	keys := s.view.len()
	cur, _ := rss()
	// Steady state: the server drops its block caches 10 s after the last read; the Go runtime returns
	// freed pages to the OS when asked.
	time.Sleep(12 * time.Second)
	runtime.GC() // twice: sync.Pools keep their items through one collection
	debug.FreeOSMemory()
	settled, peak := rss()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if p := os.Getenv("HEAPPROF"); p != "" {
		f, _ := os.Create(p)
		pprof.WriteHeapProfile(f)
		f.Close()
	}
	fmt.Printf("HUBPROCESS keys=%d load-s=%.2f rss-after-open-MiB=%.0f rss-settled-MiB=%.0f peak-rss-MiB=%.0f heap-MiB=%.0f\n",
		keys, load.Seconds(), cur, settled, peak, float64(ms.HeapAlloc)/(1<<20))
	return 0
}
