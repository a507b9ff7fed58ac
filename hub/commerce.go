package hub

import (
	"context"
	"log/slog"
	"os"
	"strings"

	"github.com/gemba-io/gemba/hub/ingest/commerce"
)

// ImportInventory publishes an inventory CSV to the COMMERCE stream of the NATS cfg names: its
// servers, or the embedded listen address of a running hub. The stream is bound as the hub made it,
// never created nor changed; missing, it is the error.
func ImportInventory(ctx context.Context, cfg *Config, file, snapshotID string) (commerce.Report, error) {
	urls := strings.Join(cfg.NATS.Servers, ",")
	if urls == "" {
		urls = "nats://" + cfg.NATS.Embedded.Listen
	}
	log := slog.New(slog.DiscardHandler)
	nc, err := connect(cfg, urls, log, false)
	if err != nil {
		return commerce.Report{}, err
	}
	defer nc.Close()
	js, err := newJetStream(nc)
	if err != nil {
		return commerce.Report{}, err
	}
	if _, err := commerce.BindStream(ctx, js, cfg.Commerce, commerce.InventorySubject(cfg.Commerce.Prefix)); err != nil {
		return commerce.Report{}, err
	}
	pub, err := commerce.NewPublisher(js, cfg.Commerce)
	if err != nil {
		return commerce.Report{}, err
	}
	f, err := os.Open(file)
	if err != nil {
		return commerce.Report{}, err
	}
	defer f.Close()
	return commerce.ImportInventory(ctx, pub, f, commerce.ImportOptions{Name: file, SnapshotID: snapshotID,
		MaxBytes: cfg.Commerce.MaxImportBytes, MaxFuture: cfg.Inventory.MaxFuture})
}
