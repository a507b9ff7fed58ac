package commerce

import (
	"context"
	"errors"
	"fmt"

	"github.com/gemba-io/gemba/hub/state/inventory"
)

// Movement is what a sale does to the stock: it removes its quantity; a return (a negative
// quantity) brings it back. The id is the event's identity, so the inventory absorbs a redelivery.
func (e Sale) Movement() inventory.Movement {
	m := inventory.Movement{ID: e.MsgID(), SKU: e.SKU, Site: e.Site, Kind: inventory.Sold, Qty: e.Quantity,
		Time: e.Time, Channel: e.Channel}
	if e.IsReturn() {
		m.Kind, m.Qty = inventory.Returned, -e.Quantity
	}
	return m
}

// Count is the inventory snapshot a count row sets.
func (e Snapshot) Count() inventory.Snapshot {
	return inventory.Snapshot{ID: e.MsgID(), SKU: e.SKU, Site: e.Site, OnHand: e.OnHand, Time: e.Time}
}

// StockSink applies commerce events to an inventory store; what the store refuses as invalid is
// rejected for good (retrying cannot help), so the consumer terminates it.
type StockSink struct{ Inventory *inventory.Store }

// ApplySale moves the stock by a sale or a return.
func (s StockSink) ApplySale(ctx context.Context, e Sale) error {
	_, err := s.Inventory.Move(ctx, e.Movement())
	return reject(err)
}

// ApplySnapshot sets the count.
func (s StockSink) ApplySnapshot(ctx context.Context, e Snapshot) error {
	_, err := s.Inventory.Snapshot(ctx, e.Count())
	return reject(err)
}

func reject(err error) error {
	if errors.Is(err, inventory.ErrInvalid) {
		return fmt.Errorf("%w: %w", ErrReject, err)
	}
	return err
}
