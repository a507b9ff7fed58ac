package inventory

import (
	"fmt"

	"github.com/gemba-io/gemba/hub/state/kvkey"
)

// Keys are "<site>.<sku>", each part escaped as kvkey does ("Plant 1" → "Plant=201",
// "A.B=C" → "A=2EB=3DC"). The mapping is one-to-one, so the key is the identity of the site × SKU pair.

// keyOf returns the KV key of a site × SKU pair (both non-empty).
func keyOf(site, sku string) string { return kvkey.Join(site, sku) }

// splitKey returns the site and SKU of a key written by keyOf.
func splitKey(key string) (site, sku string, err error) {
	parts, err := kvkey.Split(key, 2)
	if err != nil {
		return "", "", fmt.Errorf("want <site>.<sku>: %w", err)
	}
	return parts[0], parts[1], nil
}
