package mqtt

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gemba-io/gemba/collectors/mqtt/sparkplug"
	"github.com/gemba-io/gemba/signal"
)

// The value mapping shared with the OPC UA collector (docs/wire-format.md, "Values from the
// sources"): DateTime → an RFC 3339 string in UTC, as the wire writes times; UInt64 → an integer
// while it fits int64, else the exact decimal digits as a string (a float would round it);
// Bytes → standard base64; arrays → one sample per element, named signal[i].

// maxSpElements caps the samples one array or DataSet metric makes (the OPC UA collector's max_array
// default): a 10,000-row DataSet is a table, not a set of readings.
const maxSpElements = 64

// reasonUnsupported counts metrics of a type that makes no sample (Template, File, PropertySet,
// Unknown) and arrays or DataSets cut at maxSpElements.
const reasonUnsupported = "sparkplug_unsupported"

// uint64Value is the lossless mapping of an unsigned 64-bit integer.
func uint64Value(v uint64) signal.Value {
	if v > math.MaxInt64 {
		return signal.String(strconv.FormatUint(v, 10))
	}
	return signal.Int(int64(v))
}

// dateTimeValue renders Sparkplug's DateTime (ms since the epoch) as the wire renders times. A time
// after year 9999 has no RFC 3339 form.
func dateTimeValue(ms uint64) (signal.Value, error) {
	if ms > 253402300799999 { // 9999-12-31T23:59:59.999Z
		return signal.Value{}, fmt.Errorf("DateTime %d ms is after year 9999", ms)
	}
	return signal.String(time.UnixMilli(int64(ms)).UTC().Format(time.RFC3339Nano)), nil
}

// spElement is one sample of an array or DataSet metric: the suffix of its signal name and its value.
type spElement struct {
	suffix string
	val    signal.Value
	err    error
}

// spElements decodes the array (Sparkplug 3.0 packs them little-endian into bytes_value) and
// DataSet metrics; ok is false for other datatypes. cut counts elements beyond maxSpElements.
func spElements(mt *sparkplug.Payload_Metric, dt sparkplug.DataType) (els []spElement, cut int, ok bool, err error) {
	if dt == sparkplug.DataSet {
		ds := mt.GetDatasetValue()
		if ds == nil {
			return nil, 0, true, fmt.Errorf("DataSet metric without a dataset_value")
		}
		els, cut, err = dataSetElements(ds)
		return els, cut, true, err
	}
	size, elem := arrayCodec(dt)
	if elem == nil && dt != sparkplug.BooleanArray && dt != sparkplug.StringArray {
		return nil, 0, false, nil
	}
	bv, isBytes := mt.Value.(*sparkplug.Payload_Metric_BytesValue)
	if !isBytes {
		return nil, 0, true, fmt.Errorf("%s metric without a bytes_value", dt)
	}
	b := bv.BytesValue
	var vals []signal.Value
	var errs []error
	switch dt {
	case sparkplug.BooleanArray:
		// a uint32 count, then the bits, most significant first
		if len(b) < 4 {
			return nil, 0, true, fmt.Errorf("BooleanArray of %d bytes has no count", len(b))
		}
		n := int(binary.LittleEndian.Uint32(b))
		if (n+7)/8 > len(b)-4 {
			return nil, 0, true, fmt.Errorf("BooleanArray of %d values in %d bytes", n, len(b)-4)
		}
		for i := range min(n, maxSpElements) {
			vals = append(vals, signal.Bool(b[4+i/8]&(0x80>>(i%8)) != 0))
		}
		cut = max(0, n-maxSpElements)
	case sparkplug.StringArray:
		// null-terminated UTF-8 strings
		parts := strings.Split(string(b), "\x00")
		if len(parts) > 0 && parts[len(parts)-1] == "" {
			parts = parts[:len(parts)-1]
		}
		for i, s := range parts {
			if i == maxSpElements {
				cut = len(parts) - i
				break
			}
			if !utf8.ValidString(s) {
				vals, errs = append(vals, signal.Value{}), append(errs, errInvalidUTF8)
				continue
			}
			vals = append(vals, signal.String(s))
		}
	default:
		if len(b)%size != 0 {
			return nil, 0, true, fmt.Errorf("%s of %d bytes is not a whole number of %d-byte values", dt, len(b), size)
		}
		n := len(b) / size
		for i := range min(n, maxSpElements) {
			v, err := elem(b[i*size:])
			vals, errs = append(vals, v), append(errs, err)
		}
		cut = max(0, n-maxSpElements)
	}
	for i, v := range vals {
		e := spElement{suffix: "[" + strconv.Itoa(i) + "]", val: v}
		if i < len(errs) {
			e.err = errs[i]
		}
		els = append(els, e)
	}
	return els, cut, true, nil
}

// arrayCodec is the element size and decoder of a fixed-size array datatype (nil for others).
func arrayCodec(dt sparkplug.DataType) (int, func([]byte) (signal.Value, error)) {
	le := binary.LittleEndian
	switch dt {
	case sparkplug.Int8Array:
		return 1, func(b []byte) (signal.Value, error) { return signal.Int(int64(int8(b[0]))), nil }
	case sparkplug.Int16Array:
		return 2, func(b []byte) (signal.Value, error) { return signal.Int(int64(int16(le.Uint16(b)))), nil }
	case sparkplug.Int32Array:
		return 4, func(b []byte) (signal.Value, error) { return signal.Int(int64(int32(le.Uint32(b)))), nil }
	case sparkplug.Int64Array:
		return 8, func(b []byte) (signal.Value, error) { return signal.Int(int64(le.Uint64(b))), nil }
	case sparkplug.UInt8Array:
		return 1, func(b []byte) (signal.Value, error) { return signal.Int(int64(b[0])), nil }
	case sparkplug.UInt16Array:
		return 2, func(b []byte) (signal.Value, error) { return signal.Int(int64(le.Uint16(b))), nil }
	case sparkplug.UInt32Array:
		return 4, func(b []byte) (signal.Value, error) { return signal.Int(int64(le.Uint32(b))), nil }
	case sparkplug.UInt64Array:
		return 8, func(b []byte) (signal.Value, error) { return uint64Value(le.Uint64(b)), nil }
	case sparkplug.FloatArray:
		return 4, func(b []byte) (signal.Value, error) {
			return signal.Float(float64(math.Float32frombits(le.Uint32(b)))), nil
		}
	case sparkplug.DoubleArray:
		return 8, func(b []byte) (signal.Value, error) { return signal.Float(math.Float64frombits(le.Uint64(b))), nil }
	case sparkplug.DateTimeArray:
		return 8, func(b []byte) (signal.Value, error) { return dateTimeValue(le.Uint64(b)) }
	}
	return 0, nil
}

// dataSetElements makes one sample per cell, named signal.<column>[<row>]: a column reads as an
// array, as OPC UA arrays do. Rows beyond maxSpElements are cut.
func dataSetElements(ds *sparkplug.Payload_DataSet) ([]spElement, int, error) {
	cols, types := ds.GetColumns(), ds.GetTypes()
	if len(cols) != len(types) || uint64(len(cols)) != ds.GetNumOfColumns() {
		return nil, 0, fmt.Errorf("DataSet declares %d columns with %d names and %d types", ds.GetNumOfColumns(), len(cols), len(types))
	}
	rows := ds.GetRows()
	var els []spElement
	for r, row := range rows {
		if r == maxSpElements {
			return els, (len(rows) - r) * len(cols), nil
		}
		cells := row.GetElements()
		if len(cells) != len(cols) {
			return nil, 0, fmt.Errorf("DataSet row %d has %d values for %d columns", r, len(cells), len(cols))
		}
		for c, cell := range cells {
			m := &sparkplug.Payload_Metric{}
			switch v := cell.GetValue().(type) {
			case *sparkplug.Payload_DataSet_DataSetValue_IntValue:
				m.Value = &sparkplug.Payload_Metric_IntValue{IntValue: v.IntValue}
			case *sparkplug.Payload_DataSet_DataSetValue_LongValue:
				m.Value = &sparkplug.Payload_Metric_LongValue{LongValue: v.LongValue}
			case *sparkplug.Payload_DataSet_DataSetValue_FloatValue:
				m.Value = &sparkplug.Payload_Metric_FloatValue{FloatValue: v.FloatValue}
			case *sparkplug.Payload_DataSet_DataSetValue_DoubleValue:
				m.Value = &sparkplug.Payload_Metric_DoubleValue{DoubleValue: v.DoubleValue}
			case *sparkplug.Payload_DataSet_DataSetValue_BooleanValue:
				m.Value = &sparkplug.Payload_Metric_BooleanValue{BooleanValue: v.BooleanValue}
			case *sparkplug.Payload_DataSet_DataSetValue_StringValue:
				m.Value = &sparkplug.Payload_Metric_StringValue{StringValue: v.StringValue}
			}
			e := spElement{suffix: "." + metricField(cols[c]) + "[" + strconv.Itoa(r) + "]"}
			v, ok, err := spValue(m, sparkplug.DataType(types[c]))
			switch {
			case err != nil:
				e.err = err
			case !ok:
				e.err = fmt.Errorf("column type %s makes no value", sparkplug.DataType(types[c]))
			default:
				e.val = v
			}
			els = append(els, e)
		}
	}
	return els, 0, nil
}

// bytesValue is Sparkplug Bytes as OPC UA ByteString: standard base64.
func bytesValue(b []byte) signal.Value { return signal.String(base64.StdEncoding.EncodeToString(b)) }
