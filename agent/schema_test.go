package agent

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/gemba-io/gemba/signal"
)

// checkStatusSchema validates a real status record, as the uplink publishes it, against the wire
// schema in docs/batch.schema.json (which holds the collector states as an enum).
func checkStatusSchema(t *testing.T, st signal.Status) {
	t.Helper()
	path, err := filepath.Abs("../docs/batch.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	sch, err := c.Compile(path)
	if err != nil {
		t.Fatalf("compile the schema: %v", err)
	}
	now := time.Now().UTC()
	enc := signal.AppendBatch(nil, &signal.Batch{Header: signal.Header{Schema: signal.SchemaVersion, Agent: "gw-test",
		Site: "plant1", Stream: signal.StreamStatus, Incarnation: "0123456789abcdef", FirstSeq: 1, LastSeq: 1, Count: 1,
		Oldest: now, Newest: now, Sent: now}, Status: []signal.Status{st}})
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(enc))
	if err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate(inst); err != nil {
		t.Errorf("status record %s is not valid against docs/batch.schema.json: %v", enc, err)
	}
}
