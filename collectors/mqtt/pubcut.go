package mqtt

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
)

// pubCutter bounds what a PUBLISH from the broker costs. paho reads each packet whole into memory
// (twice: the packet, then its payload), whatever its size, up to MQTT's 256 MiB; max_payload
// only decided whether the payload was parsed. pubCutter rewrites the stream paho reads: a PUBLISH
// whose payload exceeds max_payload reaches paho with its first max_payload+1 bytes (topic and
// packet id intact, so it is counted too_large and acknowledged), and the rest is discarded as it
// arrives.
type pubCutter struct {
	r     *bufio.Reader
	limit int    // max_payload
	out   []byte // the current packet's fixed header, as paho is to read it
	body  int    // bytes of the current packet still to pass through
	skip  int    // payload bytes to discard after body
	hdr   [5]byte
}

// maxRemaining is MQTT's largest remaining length (4 length bytes).
const maxRemaining = 268435455

var errBadLength = errors.New("malformed remaining length in a packet from the broker")

func (p *pubCutter) Read(b []byte) (int, error) {
	for {
		switch {
		case len(p.out) > 0:
			n := copy(b, p.out)
			p.out = p.out[n:]
			return n, nil
		case p.body > 0:
			n, err := p.r.Read(b[:min(len(b), p.body)])
			p.body -= n
			return n, err
		case p.skip > 0:
			n, err := p.r.Discard(p.skip)
			p.skip -= n
			if err != nil {
				return 0, err
			}
		default:
			if err := p.header(); err != nil {
				return 0, err
			}
		}
	}
}

// header reads the next packet's fixed header and decides what of the packet paho gets.
func (p *pubCutter) header() error {
	first, err := p.r.ReadByte()
	if err != nil {
		return err
	}
	rem, n := 0, 0
	for shift := 0; ; shift += 7 {
		if n == 4 {
			return errBadLength
		}
		c, err := p.r.ReadByte()
		if err != nil {
			return noEOF(err)
		}
		n++
		rem |= int(c&0x7f) << shift
		if c&0x80 == 0 {
			break
		}
	}
	p.out, p.body = append(p.hdr[:0], first), rem
	if first>>4 != 3 || rem-2 <= p.limit { // not a PUBLISH, or its payload fits anyway
		p.out = appendLength(p.out, rem)
		return nil
	}
	tl, err := p.r.Peek(2)
	if err != nil {
		return noEOF(err)
	}
	vh := 2 + int(binary.BigEndian.Uint16(tl)) // topic
	if (first>>1)&3 > 0 {
		vh += 2 // packet id
	}
	if payload := rem - vh; vh > rem || payload <= p.limit {
		p.out = appendLength(p.out, rem) // fits (or malformed: paho says so)
	} else {
		p.body, p.skip = vh+p.limit+1, payload-p.limit-1
		p.out = appendLength(p.out, p.body)
	}
	return nil
}

func appendLength(b []byte, n int) []byte {
	for {
		c := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			return b
		}
	}
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
