package signal

import (
	"strconv"
	"strings"
	"testing"
)

// manyLabels is a samples batch whose one record carries n labels: under 1 MB (NATS's default
// max_payload) for n = 100000.
func manyLabels(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"schema":2,"agent":"a","site":"s","stream":"samples","config_version":"","incarnation":"x",` +
		`"first_seq":1,"last_seq":1,"count":1,"historical":false,"delay_ms":0,"oldest":null,"newest":null,"sent":null,` +
		`"records":[{"sig":"x","ts":null,"lbl":{`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"` + strconv.Itoa(i) + `":""`)
	}
	b.WriteString(`}}]}`)
	return []byte(b.String())
}

// TestDecodeManyLabelsIsNotQuadratic: the fast path checked every label key against every earlier
// one, so one 1 MB message with 100000 labels cost the hub's consumer about 40 s of CPU (and
// JetStream redelivers it). The fast path now hands a label set beyond fastMaxLabels to the general
// decoder, which is linear; the result is the same.
func TestDecodeManyLabelsIsNotQuadratic(t *testing.T) {
	data := manyLabels(2000)
	if _, ok := decodeBatchFast(data); ok {
		t.Fatalf("fast path decoded a record with 2000 labels (quadratic key check)")
	}
	b, err := DecodeBatch(manyLabels(100000))
	if err != nil {
		t.Fatal(err)
	}
	if l := b.Samples[0].Labels; len(l) != 100000 || l[0].Key != "0" || l[99999].Key != "99999" {
		t.Fatalf("labels: %d, want 100000 in document order", len(l))
	}
}

// TestDecodeSchema1IgnoresIncarnation: incarnation is not a schema-1 field, so a schema-1 batch
// decodes with an empty incarnation (docs/wire-format.md, Versioning) whatever the document holds.
// Taken as it was, a schema-1 message could put a ':' into the message id that the hub dedups on
// and take the id of another agent's message: agent "x" with incarnation "y:samples:z" and agent
// "x:samples:y" with incarnation "z" both had x:samples:y:samples:z:1.
func TestDecodeSchema1IgnoresIncarnation(t *testing.T) {
	enc := string(AppendBatch(nil, &Batch{Header: testHeader(StreamSamples, 1),
		Samples: []Sample{{Signal: "a", Time: t0, Value: Float(1)}}}))
	for _, inc := range []string{"y:samples:z", "5be1c0de2f6a9d31"} {
		old := strings.Replace(strings.Replace(enc, `"schema":2`, `"schema":1`, 1), `"5be1c0de2f6a9d31"`, strconv.Quote(inc), 1)
		for name, dec := range map[string]func([]byte) (*Batch, error){"DecodeBatch": DecodeBatch, "general": decodeBatchJSON} {
			b, err := dec([]byte(old))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if b.Schema != 1 || b.Incarnation != "" {
				t.Errorf("%s: schema-1 batch with incarnation %q decoded with incarnation %q (id %s)", name, inc, b.Incarnation, b.MsgID())
			}
		}
	}
}
