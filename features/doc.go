// Package features is the agent's edge feature engine: it folds samples into event-time windows per
// signal (gauge statistics, counter increments, machine states, production per SKU) and emits
// signal.Feature records when windows close, surviving restarts through checkpoints.
//
// # Features by kind
//
//	gauge    count sum mean min max stddev (population) first last delta (last-first)
//	         rate (delta per second between first and last sample) ewma (ewma_alpha, value after
//	         the window's last in-order sample) twa (time-weighted mean, sample-and-hold)
//	         p50 p90 p95 p99 (Hyndman–Fan type 7, R's and numpy's default: exact while the
//	         window holds at most 128 values; beyond, type 7 over a DDSketch's order
//	         statistics, within 1% relative accuracy)
//	counter  delta (increase, resets and rollovers handled) rate (delta / window seconds) resets
//	state    time_in_state (seconds, label state=...) transitions availability (running / planned)
//
// Every window with Bad samples also gets bad_count, and with excluded Uncertain samples
// uncertain_count. Feature.Count is the number of samples a record was computed from (for a counter
// with by: of that group). Counters with by emit one record per group value with a label (by_label,
// default the last part of the by signal's name, e.g. sku).
//
// # Time
//
// Windows are event-time windows aligned to the Unix epoch: window k of a rule covers
// [(k+1)*hop - window, (k+1)*hop). Each signal has its own watermark, its newest sample time. A
// window closes when the watermark reaches its end plus allowed_lateness; a sample for a closed
// window is late: it is counted (gemba_features_samples_total{result="late"}, Stats) and always
// forwarded raw, never folded. When a signal has been silent for idle_timeout (wall clock), its
// watermark is extrapolated by the silence (continuing from where an earlier extrapolation got,
// and across restarts: the idle clock is checkpointed) and the windows that passes close. Gauge
// windows closed that way are partial (the signal stopped). Counters and states hold their value:
// sources report by exception, so silence from a live source means "unchanged". Their windows keep
// coming, a counter's with delta 0 and n 0, not partial, while the value is known (the newest
// sample is not Bad) and Options.Live does not report the sample Source gone; otherwise they stop
// after the last sample, and the window holding it is partial. A counter window without samples
// between two samples is emitted the same way (delta 0, n 0).
//
// With Options.Bounds (the agent's agent.timestamps) a sample dated more than MaxFutureSkew ahead of
// Now or before MinTime is out of bounds: counted (result="out_of_bounds", Stats.OutOfBounds) and
// forwarded raw, never folded, and it moves no watermark. No watermark passes Now either: a sample
// inside the skew is folded into its (future) window, which closes when the clock gets there, so a
// fast source clock never makes the correct samples after it late.
//
// Gauges fold into panes of length hop (mergeable statistics, no allocation per sample); ewma and
// twa follow samples in time order and skip out-of-order ones (older than the newest in-order
// sample, Bad ones included). twa holds each good value until the next in-order sample: a Bad
// sample neither contributes nor interrupts the hold, and the hold also covers empty panes next to
// a sample. stddev is the population one; ewma carries across windows. Counters and states keep their
// points until their windows close, so out-of-order samples within the lateness are exact. Samples
// of one source time are taken in arrival order and folded into one point as they arrive (what they
// add up to: counts, increments, resets, transitions), and a group-by signal keeps the last value
// of a time, so a source whose clock stopped holds constant memory. A counter
// increment is the difference between consecutive samples in event time and belongs to the later
// one's window; with by, to the by signal's value at that sample's time (last by sample at or
// before it, looked up when the window closes, so a late-arriving SKU change is still exact).
// A decrease is a rollover when counter_max is set and the previous value was above counter_max/2
// (increase = counter_max - prev + cur + 1), otherwise a reset to zero (increase = cur).
//
// # Retention and the series limit
//
// Each signal a rule matches has a series; a glob rule matched by names that keep changing (a job
// id in an MQTT topic) would create them without end. A series whose signal sent nothing for its
// rule's retention (wall clock; default the larger of 168h, twice window plus allowed_lateness and
// twice idle_timeout, so a counter reporting by exception keeps its baseline through a weekend
// standstill) is dropped: its windows are closed as the idle timeout closes them, then the series
// and its checkpoint entry are removed. A counter's baseline and a state go with it: a signal that
// comes back starts as after a cold start. Options.MaxSeries caps the series held; beyond it the
// samples of a new signal are forwarded raw, not folded, counted (result="series_limit",
// Stats.SeriesLimit), and a WARN names one of them and the cap at most once a minute. A restore
// with more series in the checkpoint than the cap keeps the most recently updated (newest arrival,
// ties by signal name) and discards the others with a WARN each.
//
// # Partial
//
// A record is partial when its window was not fully observed: it starts before the first usable
// sample after a cold start, a crash or a clean stop longer than a window, before the restart after
// a crash or such a stop (the newest event time plus the wall-clock silence since), or it was
// closed by the idle timeout (gauge; counter and state only when their source is gone). A first
// sample exactly at a window start leaves that window complete. Downtime is the time from the saved
// checkpoint to the restore (a crash counts whatever its length, what was folded after the
// checkpoint is lost); a clean stop shorter than a window is none, whatever event time a quiet
// signal skipped meanwhile. Within one boot of the machine it is measured by the boot's clock
// (Options.Boot, saved in the checkpoint), so a step of the wall clock while the agent was stopped
// is no downtime and hides none; the restored wall-clock times (the idle clock) move with the step.
// While the agent runs the idle clock measures by the monotonic clock (time.Now's reading), and a
// checkpoint saves its times on the wall clock of the save: a step while running is no silence,
// before or after a restart.
// Across a reboot only the wall clock is left: a clock set forward cannot be told from downtime
// that long, and a clock before the save leaves the downtime unknown (never negative): every
// window is then partial up to the signal's first usable sample newer than its watermark. The
// window of the first usable sample after a crash or a long stop is partial; a value resent with
// its old time (a collector starting) is not that sample, the first newer one is. Such short stops add up: each is charged to the windows open at it or
// starting before the restart, and a window charged more than its length in all is partial as
// after one longer stop (every window starting before where the signal's event time had got to at
// the restart of the oldest stop in that sum).
//
// # Restarts
//
// Open windows, watermarks and group-by values are checkpointed to the Store (key
// CheckpointKey) by Run every CheckpointInterval, one second after windows closed, and by Close,
// which alone marks the checkpoint clean. New restores it and immediately rewrites it as not
// clean. After a clean restart the open windows continue: nothing is lost or counted twice.
// After a crash the engine continues from the last checkpoint: what was folded after it is
// missing, every window open at the restart (up to the first new usable sample) is partial, and a
// window that closed after that checkpoint may be emitted a second time, partial; consumers keep
// the non-partial record of a (signal, name, window, labels). Counter deltas stay exact across both
// (the increase is measured from the last checkpointed value). A corrupt or unreadable checkpoint
// is logged and gives a cold start; series whose rule changed start afresh.
package features
