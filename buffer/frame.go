package buffer

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"time"
)

// Key layout. Everything the head of a queue needs (sequence, append time, payload size) is in the
// key, so acks, evictions, age expiry and recovery iterate keys only and never read the value log.
//
//	queue record: 'q' stream seq(8, big endian) appendUnixNano(8) payloadLen(4)  -> frame
//	queue meta:   'm' stream kind(1)                                           -> uint64
//	user meta:    'x' name                                                     -> value (GetMeta/PutMeta)
//	flush marker: 'z'                                                          -> written and dropped to force a memtable flush
const (
	pfxQueue = 'q'
	pfxMeta  = 'm'
	pfxUser  = 'x'
	pfxFlush = 'z'

	metaHead  = 'h' // highest sequence removed from the queue (acked or dropped)
	metaAcked = 'a' // highest sequence acknowledged
	metaFloor = 'f' // sequences up to here may have been handed out: never reuse them
	// metaRemoved counts the records ever removed (acked or dropped), in the transaction that
	// removes them, so that a store found short at open can tell removed records from lost ones.
	metaRemoved = 'r'
	// metaDrops holds the drop counters (dropReasons order, 8 bytes each), written with every
	// removal, so that they survive a crash.
	metaDrops = 'd'
	// metaClean (under stream byte 0xff) exists while the store is closed cleanly.
	metaClean = 'c'
	// metaIncarnation (under stream byte 0xff) names this store's life; see Buffer.Incarnation.
	metaIncarnation = 'i'
	// metaStep (under stream byte 0xff) is the last wall-clock step seen; see clockStep.
	metaStep = 's'
	// metaMark (under stream byte 0xff) is the wall clock and the boot's clock read together; see
	// clockMark.
	metaMark = 'w'
	// uncleanGap is how far sequences jump after an unclean stop. With sync: batch or none, records
	// visible to the uplink (and maybe published with their sequence in the message id) can be lost
	// by a power cut; reusing their sequences would make JetStream's dedup drop the new records.
	uncleanGap = 1 << 20

	qkeyLen  = 22
	frameLen = 4 // CRC32C in front of the payload
	// entryOverhead estimates what one record costs on disk beyond its payload: the frame, the key in
	// the value log and in the LSM, Badger's headers and the value pointer.
	entryOverhead = frameLen + 2*qkeyLen + 40
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func qprefix(s uint8) []byte { return []byte{pfxQueue, s} }

func qseek(s uint8, seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{pfxQueue, s}, seq)
}

func qkey(s uint8, seq uint64, t time.Time, n int) []byte {
	k := make([]byte, 0, qkeyLen)
	k = append(k, pfxQueue, s)
	k = binary.BigEndian.AppendUint64(k, seq)
	k = binary.BigEndian.AppendUint64(k, uint64(t.UnixNano()))
	return binary.BigEndian.AppendUint32(k, uint32(n))
}

type qkeyInfo struct {
	seq  uint64
	t    time.Time
	size int
}

func parseQKey(k []byte) (qkeyInfo, bool) {
	if len(k) != qkeyLen || k[0] != pfxQueue {
		return qkeyInfo{}, false
	}
	return qkeyInfo{
		seq:  binary.BigEndian.Uint64(k[2:]),
		t:    time.Unix(0, int64(binary.BigEndian.Uint64(k[10:]))),
		size: int(binary.BigEndian.Uint32(k[18:])),
	}, true
}

func metaKey(s uint8, kind byte) []byte { return []byte{pfxMeta, s, kind} }

// frame prefixes payload with a CRC32C over the sequence and the payload, so a value that is
// damaged or that ended up under another key is detected.
func frame(seq uint64, payload []byte) []byte {
	out := make([]byte, frameLen+len(payload))
	copy(out[frameLen:], payload)
	binary.BigEndian.PutUint32(out, checksum(seq, payload))
	return out
}

func checksum(seq uint64, payload []byte) uint32 {
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], seq)
	return crc32.Update(crc32.Checksum(s[:], castagnoli), castagnoli, payload)
}

var errCorruptFrame = errors.New("checksum mismatch")

// unframe checks a stored value and returns its payload.
func unframe(seq uint64, size int, v []byte) ([]byte, error) {
	if len(v) != frameLen+size {
		return nil, errors.New("length mismatch")
	}
	p := v[frameLen:]
	if binary.BigEndian.Uint32(v) != checksum(seq, p) {
		return nil, errCorruptFrame
	}
	return p, nil
}
