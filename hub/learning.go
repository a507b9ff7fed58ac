package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/hub/learn/demand"
	"github.com/gemba-io/gemba/hub/learn/registry"
)

// LearnConfig is the learn section: demand forecasts from the COMMERCE stream's sales, fitted into
// versioned model sets that every replica follows for days of cover (docs/hub-learning.md).
type LearnConfig struct {
	// Enabled runs the model registry on this replica: it follows the active model set (Cover) and
	// takes its turn at the scheduled refit.
	Enabled bool             `yaml:"enabled" json:"enabled"`
	Buckets registry.Buckets `yaml:"buckets" json:"buckets"`
	// RefitEvery is the schedule: a replica refits when the newest stored set is older than this
	// (checked every minute; the refit lock lets one replica fit at a time). 0: on demand only
	// (gemba-hub models refit).
	RefitEvery time.Duration `yaml:"refit_every" json:"refit_every"`
	// HistoryDays is how many whole days before today a refit reads. The COMMERCE stream keeps
	// commerce.max_age of sales (30 days by default): set that at least this long, or the series start
	// where the stream does.
	HistoryDays int `yaml:"history_days" json:"history_days"`
	// HorizonDays is how many days each set forecasts; beyond it the last day's forecast goes on.
	HorizonDays int `yaml:"horizon_days" json:"horizon_days"`
	// ByChannel fits one series per SKU × site × channel (added up for cover) instead of per SKU × site.
	ByChannel bool `yaml:"by_channel" json:"by_channel"`
	// Promote is what a scheduled refit does with its set: activate, shadow (beside the active one,
	// for a person to promote) or none. The first set ever is activated unless none.
	Promote string `yaml:"promote" json:"promote"`
	// Timezone is where a day starts for the daily series (an IANA name; default UTC).
	Timezone string `yaml:"timezone" json:"timezone"`
	// LockTTL is how long the refit lock outlives a holder that stopped refreshing it.
	LockTTL time.Duration `yaml:"lock_ttl" json:"lock_ttl"`
	// Workers fit series in parallel (0: every CPU).
	Workers int `yaml:"workers" json:"workers"`
}

// DefaultLearnConfig is the section's defaults (off).
func DefaultLearnConfig() LearnConfig {
	return LearnConfig{RefitEvery: 24 * time.Hour, HistoryDays: 365, HorizonDays: 28, Promote: registry.PromoteActivate,
		Timezone: "UTC", LockTTL: 2 * time.Minute}
}

// Validate checks the learn section.
func (l *LearnConfig) Validate(r config.Report) {
	for f, b := range map[string]string{"buckets.sets": l.Buckets.Sets, "buckets.state": l.Buckets.State, "buckets.lock": l.Buckets.Lock} {
		if b != "" && strings.ContainsAny(b, " \t\r\n.*>/\\") {
			r.Errorf(f, "%q is not a bucket name (no white space, '.', '*', '>', '/' or '\\')", b)
		}
	}
	if l.RefitEvery != 0 && l.RefitEvery < time.Minute {
		r.Errorf("refit_every", "%s: want 0 (on demand only) or at least 1m", l.RefitEvery)
	}
	if l.HistoryDays < 14 || l.HistoryDays > 3650 {
		r.Errorf("history_days", "%d: want 14 to 3650 (the backtest needs 28 + 14 days to choose a method)", l.HistoryDays)
	}
	if l.HorizonDays < 1 || l.HorizonDays > 365 {
		r.Errorf("horizon_days", "%d: want 1 to 365", l.HorizonDays)
	}
	switch l.Promote {
	case registry.PromoteActivate, registry.PromoteShadow, registry.PromoteNone:
	default:
		r.Errorf("promote", "%q: want %s, %s or %s", l.Promote, registry.PromoteActivate, registry.PromoteShadow, registry.PromoteNone)
	}
	if _, err := time.LoadLocation(l.Timezone); err != nil || l.Timezone == "" {
		r.Errorf("timezone", "%q is not a time zone (an IANA name such as Europe/Berlin, or UTC)", l.Timezone)
	}
	if l.LockTTL < time.Second {
		r.Errorf("lock_ttl", "%s: want at least 1s", l.LockTTL)
	}
	if l.Workers < 0 {
		r.Errorf("workers", "%d: want 0 (every CPU) or more", l.Workers)
	}
}

// OpenModels creates or updates the model registry's buckets cfg names: the hub's, when it starts.
func OpenModels(ctx context.Context, js jetstream.JetStream, cfg *Config, log *slog.Logger) (*registry.Registry, error) {
	return registry.Open(ctx, js, registry.Options{Buckets: cfg.Learn.Buckets, Replicas: cfg.NATS.Replicas,
		LockTTL: cfg.Learn.LockTTL, Logger: log})
}

// BindModels is OpenModels for the CLI (every models command): the buckets are bound as they are,
// never created nor changed.
func BindModels(ctx context.Context, js jetstream.JetStream, cfg *Config) (*registry.Registry, error) {
	return registry.Bind(ctx, js, registry.Options{Buckets: cfg.Learn.Buckets, Replicas: cfg.NATS.Replicas, LockTTL: cfg.Learn.LockTTL})
}

// RefitOptions are the refit cfg describes, by who, why and promoting as promote says ("" for the
// config's).
func RefitOptions(cfg *Config, by, why, promote string, log *slog.Logger) registry.RefitOptions {
	loc, err := time.LoadLocation(cfg.Learn.Timezone)
	if err != nil {
		loc = time.UTC // Validate refused it already
	}
	if promote == "" {
		promote = cfg.Learn.Promote
	}
	return registry.RefitOptions{
		Source:  demand.Source{Stream: cfg.Commerce.Stream, Prefix: cfg.Commerce.Prefix, Logger: log},
		History: cfg.Learn.HistoryDays, Location: loc, ByChannel: cfg.Learn.ByChannel, Promote: promote,
		Fit: registry.FitOptions{Horizon: cfg.Learn.HorizonDays, Workers: cfg.Learn.Workers, By: by, Why: why,
			FallbackWindow: cfg.Inventory.RateWindow},
	}
}

// learning is one replica's model registry: the follower Cover reads, and the refit schedule.
type learning struct {
	reg    *registry.Registry
	follow *registry.Follower
	cancel context.CancelFunc
	wg     sync.WaitGroup

	refits struct{ checks, ok, fresh, locked, noData, failed atomic.Uint64 }
}

// Cover is the active model set's days of cover of position (units on hand) for sku at site at now,
// with the shadow set's beside it; false while learning is off, before a set is active, or without a
// forecast for that SKU × site (see registry.Cover for the fields).
func (h *Hub) Cover(sku, site string, position float64, now time.Time) (registry.Cover, bool) {
	l := h.learn.Load() // stored once it follows
	if l == nil {
		return registry.Cover{}, false
	}
	return l.follow.Cover(sku, site, position, now)
}

// startLearning opens the registry (retrying while JetStream is not ready), follows the active set
// and runs the refit schedule, until the returned stop is called. Nothing here stops the hub: without
// a model set, Cover says so and decisions fall back to what they use without one.
func (h *Hub) startLearning(js jetstream.JetStream) (stop func()) {
	cfg := h.cfg
	if !cfg.Learn.Enabled {
		return func() {}
	}
	log := h.log.With("component", "learn")
	if age := cfg.Commerce.MaxAge; age > 0 && age < time.Duration(cfg.Learn.HistoryDays)*24*time.Hour {
		log.Warn("commerce.max_age keeps fewer days of sales than learn.history_days reads: refits see only what the stream keeps",
			"max_age", age, "history_days", cfg.Learn.HistoryDays)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &learning{cancel: cancel}
	h.registerLearning(l)
	l.wg.Go(func() {
		for wait := time.Second; ; wait = min(2*wait, time.Minute) {
			octx, ocancel := context.WithTimeout(ctx, 30*time.Second)
			reg, err := OpenModels(octx, js, cfg, log)
			ocancel()
			if err == nil {
				l.reg = reg
				break
			}
			log.Warn("model registry not available yet, retrying", "err", err, "retry_in", wait)
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		f, err := l.reg.Follow(func(live *registry.Live) {
			active := ""
			if live.Active != nil {
				active = live.Active.Set.Version
			}
			log.Info("model state in force", "change", live.Change.Seq, "op", live.Change.Op, "active", active, "shadow", live.Change.Shadow)
		})
		if err != nil {
			log.Error("cannot follow the model state: no cover from models on this replica", "err", err)
			return
		}
		l.follow = f
		h.learn.Store(l)
		if cfg.Learn.RefitEvery > 0 {
			h.refitLoop(ctx, js, l, log)
		}
	})
	return func() {
		cancel()
		l.wg.Wait()
		if l.follow != nil {
			l.follow.Stop()
		}
	}
}

// refitLoop refits when the newest stored set is older than refit_every. Every replica checks, at a
// jittered minute so they do not all try at once; the lock lets one fit, and the others then see a
// fresh set.
func (h *Hub) refitLoop(ctx context.Context, js jetstream.JetStream, l *learning, log *slog.Logger) {
	cfg := h.cfg
	// The first check soon after start (a new hub gets its first set without waiting a minute), then
	// about every minute.
	wait := time.Second + rand.N(4*time.Second)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = time.Minute/2 + rand.N(time.Minute)
		l.refits.checks.Add(1)
		// A set whose refit failed to promote it is not fresh: the next check, a minute on, retries.
		_, fresh, err := l.reg.Fresh(ctx, cfg.Learn.RefitEvery, time.Now())
		if err != nil {
			log.Warn("model sets not listed; refit check skipped", "err", err)
			continue
		}
		if fresh {
			continue
		}
		start := time.Now()
		opts := RefitOptions(cfg, cfg.Hub.ID, "scheduled", "", log)
		opts.FreshFor = cfg.Learn.RefitEvery // checked again under the lock: another replica may just have refitted
		res, err := l.reg.Refit(ctx, js, opts)
		switch {
		case errors.Is(err, registry.ErrFresh):
			l.refits.fresh.Add(1)
			log.Debug("refit skipped: another replica has just refitted", "err", err)
		case errors.Is(err, registry.ErrLocked):
			l.refits.locked.Add(1)
			log.Debug("refit skipped: another replica is refitting", "err", err)
		case errors.Is(err, registry.ErrNoSeries):
			l.refits.noData.Add(1)
			log.Debug("refit: no sales to fit yet", "err", err)
		case err != nil:
			l.refits.failed.Add(1)
			log.Error("refit failed", "err", err)
		default:
			l.refits.ok.Add(1)
			sum := res.Set.Summary()
			log.Info("refit stored a model set", "version", res.Version, "series", sum.Series, "failed", sum.Failed,
				"mase", sum.MeanMASE, "baseline_mase", sum.MeanBaseline, "took", time.Since(start).Round(time.Millisecond),
				"change", fmt.Sprint(res.Change != nil))
		}
	}
}

func (h *Hub) registerLearning(l *learning) {
	for outcome, v := range map[string]*atomic.Uint64{"ok": &l.refits.ok, "fresh": &l.refits.fresh, "locked": &l.refits.locked,
		"no_data": &l.refits.noData, "failed": &l.refits.failed} {
		h.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gemba_hub_models_refits_total",
			Help:        "Scheduled refits of the demand models by this replica, by outcome (fresh: another replica had just refitted; locked: another replica was refitting; no_data: no sales in the stream yet).",
			ConstLabels: prometheus.Labels{"outcome": outcome}}, func() float64 { return float64(v.Load()) }))
	}
	h.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gemba_hub_models_refit_checks_total",
		Help: "Times this replica checked whether the newest model set is older than learn.refit_every."},
		func() float64 { return float64(l.refits.checks.Load()) }))
	h.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gemba_hub_models_active_series",
		Help: "Series in the active demand model set this replica follows (0 before one is active)."}, func() float64 {
		if l := h.learn.Load(); l != nil {
			if live := l.follow.Live(); live != nil && live.Active != nil {
				return float64(len(live.Active.Set.Series))
			}
		}
		return 0
	}))
}
