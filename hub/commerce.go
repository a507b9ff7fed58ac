package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/hub/state/inventory"
)

// stockSink applies commerce events to the inventory: a sale removes stock (a return, a negative
// quantity, brings it back), a snapshot row sets the count. The inventory is idempotent by the
// event's identity, so a redelivered event is absorbed.
type stockSink struct{ inv *inventory.Store }

func (s stockSink) ApplySale(ctx context.Context, e commerce.Sale) error {
	m := inventory.Movement{ID: e.MsgID(), SKU: e.SKU, Site: e.Site, Kind: inventory.Sold, Qty: e.Quantity,
		Time: e.Time, Channel: e.Channel}
	if e.IsReturn() {
		m.Kind, m.Qty = inventory.Returned, -e.Quantity
	}
	_, err := s.inv.Move(ctx, m)
	return reject(err)
}

func (s stockSink) ApplySnapshot(ctx context.Context, e commerce.Snapshot) error {
	_, err := s.inv.Snapshot(ctx, inventory.Snapshot{ID: e.MsgID(), SKU: e.SKU, Site: e.Site, OnHand: e.OnHand, Time: e.Time})
	return reject(err)
}

// reject marks inputs the inventory refuses (retrying cannot help) so the consumer terminates them.
func reject(err error) error {
	if errors.Is(err, inventory.ErrInvalid) {
		return fmt.Errorf("%w: %w", commerce.ErrReject, err)
	}
	return err
}

// ImportInventory publishes an inventory CSV to the COMMERCE stream of the NATS cfg names: its
// servers, or the embedded listen address of a running hub.
func ImportInventory(ctx context.Context, cfg *Config, file, snapshotID string) (commerce.Report, error) {
	urls := strings.Join(cfg.NATS.Servers, ",")
	if urls == "" {
		urls = "nats://" + cfg.NATS.Embedded.Listen
	}
	log := slog.New(slog.DiscardHandler)
	nc, err := connect(cfg, urls, log)
	if err != nil {
		return commerce.Report{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
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
		MaxBytes: cfg.Commerce.MaxImportBytes})
}
