package cluster

import (
	"bytes"
	"strconv"
	"strings"
	"unsafe"

	"github.com/pushd/pushd/fanout"
)

// Redis names of a pushd channel <ch> (DESIGN §4). Every name carries the
// hash tag {<ch>}, so a channel's keys and pub/sub channels live on one
// Redis Cluster slot.
//
//	pushd:{<ch>}       raw pub/sub channel: PUBLISH/SPUBLISH <payload>, any bytes, at most once
//	pushd:{<ch>}:d     durable pub/sub channel: envelopes published by FCALL pushd_publish only
//	pushd:{<ch>}:seq   the channel's sequence counter (INCR)
//	pushd:{<ch>}:e     the channel's epoch: made anew whenever the counter is (re)created
//	pushd:{<ch>}:s     the channel's history stream; entry ID <seq>-0, field d = payload
//
// Raw and durable publications are told apart by the pub/sub channel they
// arrive on, never by their bytes: a raw payload may hold anything,
// including a valid envelope, and is still delivered as raw. The two names
// cannot collide: a raw name always ends in '}' and a durable one in ":d".
const (
	keyPrefix     = "pushd:{"
	rawSuffix     = "}"
	durableSuffix = "}:d"
	seqSuffix     = "}:seq"
	epochSuffix   = "}:e"
	streamSuffix  = "}:s"
)

// envelopeMagic opens every durable envelope: "p2:" is format version 2,
// which carries the epoch; "p1:" (version 1, no epoch, from a pushd_publish
// loaded by an older pushd) is still read, with epoch "". A future version
// gets a new magic; decoders refuse what they do not know.
const (
	envelopeMagic   = "p2:"
	envelopeMagicV1 = "p1:"
)

// maxSeqDigits bounds the decimal sequence number (uint64 max has 20).
const maxSeqDigits = 20

// rawName returns pushd:{ch}, the channel's raw pub/sub channel and the key
// that FCALL pushd_publish takes.
func rawName(ch string) string { return keyPrefix + ch + rawSuffix }

// pubsubNames returns rawName(ch) and durableName(ch) in one allocation
// (the raw name is a prefix of the durable one): both are kept as long as
// the channel is subscribed, by go-redis and by Redis itself.
func pubsubNames(ch string) (raw, durable string) {
	durable = keyPrefix + ch + durableSuffix
	return durable[:len(durable)-len(durableSuffix)+len(rawSuffix)], durable
}

// durableName returns pushd:{ch}:d.
func durableName(ch string) string { return keyPrefix + ch + durableSuffix }

// parseName maps a Redis pub/sub channel name back to the pushd channel and
// whether it is the durable one. ok is false for names pushd never
// subscribes to.
func parseName(name string) (ch string, durable, ok bool) {
	rest, found := strings.CutPrefix(name, keyPrefix)
	if !found {
		return "", false, false
	}
	if c, found := strings.CutSuffix(rest, durableSuffix); found && c != "" {
		return c, true, true
	}
	if c, found := strings.CutSuffix(rest, rawSuffix); found && c != "" {
		return c, false, true
	}
	return "", false, false
}

// AppendEnvelope appends the durable envelope of (epoch, seq, payload) to
// dst: "p2:" <epoch> ":" <seq in decimal, no leading zeros, at least 1> ":"
// <payload bytes>. The pushd_publish function builds the same bytes in Lua.
// epoch must be valid (fanout.ValidEpoch) or empty, which writes version 1
// ("p1:" <seq> ":" <payload>).
func AppendEnvelope(dst []byte, epoch string, seq uint64, payload []byte) []byte {
	if epoch == "" {
		dst = append(dst, envelopeMagicV1...)
	} else {
		dst = append(dst, envelopeMagic...)
		dst = append(dst, epoch...)
		dst = append(dst, ':')
	}
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, ':')
	return append(dst, payload...)
}

// DecodeEnvelope parses a durable envelope, version 2 ("p2:" epoch ":" seq
// ":" payload) or version 1 ("p1:" seq ":" payload, epoch empty). The
// epoch and the payload alias b (they are not copied). It fails with
// ErrEnvelope when b is neither: a missing magic, an epoch that is empty,
// longer than fanout.MaxEpochLen or has a byte outside [0-9A-Za-z_-]; an
// empty, zero, zero-padded or overflowing sequence number, or no ':' after
// it. It never panics.
func DecodeEnvelope(b []byte) (epoch []byte, seq uint64, payload []byte, err error) {
	switch {
	case len(b) >= len(envelopeMagic) && string(b[:len(envelopeMagic)]) == envelopeMagic:
		b = b[len(envelopeMagic):]
		i := bytes.IndexByte(b, ':')
		if i < 0 || !fanout.ValidEpoch(bytesString(b[:i])) {
			return nil, 0, nil, ErrEnvelope
		}
		epoch, b = b[:i], b[i+1:]
	case len(b) >= len(envelopeMagicV1) && string(b[:len(envelopeMagicV1)]) == envelopeMagicV1:
		b = b[len(envelopeMagicV1):]
	default:
		return nil, 0, nil, ErrEnvelope
	}
	i := 0
	for i < len(b) && i <= maxSeqDigits && b[i] >= '0' && b[i] <= '9' {
		d := uint64(b[i] - '0')
		if seq > (^uint64(0)-d)/10 {
			return nil, 0, nil, ErrEnvelope // overflow
		}
		seq = seq*10 + d
		i++
	}
	if i == 0 || i >= len(b) || b[i] != ':' || seq == 0 || b[0] == '0' {
		return nil, 0, nil, ErrEnvelope
	}
	return epoch, seq, b[i+1:], nil
}

// bytesString views b as a string without copying, for a read-only check
// that does not keep it.
func bytesString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
