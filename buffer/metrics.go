package buffer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/signal"
)

// collector exposes a Store's Stats as gemba_buffer_* metrics, read at scrape time so gauges and
// counters always agree with Stats.
type collector struct {
	s                                          *Store
	records, bytes, oldest, acked, dropped     *prometheus.Desc
	disk, maxBytes, full, ioErr, diskErrs, rec *prometheus.Desc
	lost                                       *prometheus.Desc
}

func newCollector(s *Store) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("gemba_buffer_"+name, help, labels, nil)
	}
	return &collector{
		s:        s,
		records:  d("records", "Records waiting to be acknowledged.", "stream"),
		bytes:    d("bytes", "Payload bytes waiting to be acknowledged.", "stream"),
		oldest:   d("oldest_age_seconds", "Age of the oldest waiting record (0 when empty).", "stream"),
		acked:    d("acked_sequence", "Highest acknowledged sequence.", "stream"),
		dropped:  d("dropped_records_total", "Records removed without an ack, by reason (max_bytes, max_age, full, corrupt, store_lost).", "stream", "reason"),
		disk:     d("disk_bytes", "Bytes the store occupies on disk, value log included."),
		maxBytes: d("max_bytes", "Configured max_bytes."),
		full:     d("full", "1 while appends are refused or evicting because of max_bytes or a full disk."),
		ioErr:    d("io_error", "1 while the last write failed (e.g. disk full)."),
		diskErrs: d("disk_errors_total", "Write, sync and disk-full errors."),
		rec:      d("recoveries_total", "Stores Badger refused to open that were moved aside to <dir>.corrupt-<time>."),
		lost:     d("lost_records_total", "Records the store held at its last state save that a damaged store did not give back at open, by reason (moved_aside, store_short).", "stream", "reason"),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.records, c.bytes, c.oldest, c.acked, c.dropped, c.disk, c.maxBytes, c.full, c.ioErr, c.diskErrs, c.rec, c.lost} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	c.s.mu.Lock()
	diskErrs, rec := c.s.diskErrs, c.s.recoveries
	var lost [signal.NumStreams][2]uint64
	for i := range lost {
		lost[i] = [2]uint64{c.s.lost[i][lostMovedAside], c.s.lost[i][lostShort]}
	}
	c.s.mu.Unlock()
	g := prometheus.GaugeValue
	for i, ss := range st.Streams {
		name := signal.Stream(i).String()
		ch <- prometheus.MustNewConstMetric(c.records, g, float64(ss.Records), name)
		ch <- prometheus.MustNewConstMetric(c.bytes, g, float64(ss.Bytes), name)
		age := 0.0
		if !ss.Oldest.IsZero() {
			age = c.s.wallNow().Sub(ss.Oldest).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(c.oldest, g, age, name)
		ch <- prometheus.MustNewConstMetric(c.acked, g, float64(ss.Acked), name)
		for _, reason := range dropReasons {
			ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(ss.Dropped[reason]), name, reason)
		}
		ch <- prometheus.MustNewConstMetric(c.lost, prometheus.CounterValue, float64(lost[i][0]), name, lostMovedAside)
		ch <- prometheus.MustNewConstMetric(c.lost, prometheus.CounterValue, float64(lost[i][1]), name, lostShort)
	}
	ch <- prometheus.MustNewConstMetric(c.disk, g, float64(st.DiskSize))
	ch <- prometheus.MustNewConstMetric(c.maxBytes, g, float64(st.MaxBytes))
	ch <- prometheus.MustNewConstMetric(c.full, g, b2f(st.Full))
	ch <- prometheus.MustNewConstMetric(c.ioErr, g, b2f(st.Err != nil))
	ch <- prometheus.MustNewConstMetric(c.diskErrs, prometheus.CounterValue, float64(diskErrs))
	ch <- prometheus.MustNewConstMetric(c.rec, prometheus.CounterValue, float64(rec))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
