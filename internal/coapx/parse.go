package coapx

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// Message format errors found by parseRequest (RFC 7252 §3, §4.2: the
// message is rejected, RST for a CON, silently dropped for a NON).
var (
	ErrTruncated      = errors.New("coap: message truncated")
	ErrReservedNibble = errors.New("coap: option delta or length 15 outside the payload marker")
	ErrEmptyPayload   = errors.New("coap: payload marker followed by an empty payload")
	ErrOptionNumber   = errors.New("coap: option number above 65535")
	ErrTokenLength    = errors.New("coap: token length above 8")
)

// MaxOptions bounds the options of one request; a request with more is
// answered 4.00 rather than decoded. No registered option set comes close.
const MaxOptions = 256

// optionDef is what RFC 7252 §5.10 (and RFC 7959 §2.1, RFC 7641 §2) define
// of an option: its value length range and whether it may repeat.
type optionDef struct {
	min, max   int
	repeatable bool
}

// optionDefs lists the options whose length and repeatability the server
// checks; an occurrence outside them is treated as unrecognized (§5.4.3,
// §5.4.5): 4.02 when critical, ignored when elective.
var optionDefs = map[message.OptionID]optionDef{
	message.IfMatch:       {0, 8, true},
	message.URIHost:       {1, 255, false},
	message.ETag:          {1, 8, true},
	message.IfNoneMatch:   {0, 0, false},
	message.Observe:       {0, 3, false},
	message.URIPort:       {0, 2, false},
	message.LocationPath:  {0, 255, true},
	message.URIPath:       {0, 255, true},
	message.ContentFormat: {0, 2, false},
	message.MaxAge:        {0, 4, false},
	message.URIQuery:      {0, 255, true},
	message.Accept:        {0, 2, false},
	message.LocationQuery: {0, 255, true},
	message.Block2:        {0, 3, false},
	message.Block1:        {0, 3, false},
	message.Size2:         {0, 4, false},
	message.ProxyURI:      {1, 1034, false},
	message.ProxyScheme:   {1, 255, false},
	message.Size1:         {0, 4, false},
	// Vendor options (see the constants above): one occurrence each.
	OptionToken61:   {0, 1034, false},
	OptionAuthToken: {0, 1034, false},
	OptionSeq:       {0, 1034, false},
	OptionMessageID: {0, 1034, false},
	OptionDownlink:  {0, 1034, false},
	OptionSignE:     {0, 1034, false},
	OptionPayloadE:  {0, 1034, false},
}

// rawRequest is a request datagram split into its parts. Options holds
// every option of the datagram in order (none skipped), aliasing the
// datagram; Payload is nil when there is none.
type rawRequest struct {
	typ     message.Type
	code    codes.Code
	mid     uint16
	token   []byte
	options message.Options
	payload []byte
}

// parseRequest splits a datagram into header, token, options and payload
// without interpreting option values. It returns a format error for what
// RFC 7252 §3 makes one: a truncated option, the reserved nibble 15 outside
// the payload marker, an option number beyond 65535, a payload marker with
// nothing after it. A datagram with more than MaxOptions options returns
// errTooManyOptions (a well-formed message the server declines).
func parseRequest(b []byte) (rawRequest, error) {
	var r rawRequest
	if len(b) < 4 {
		return r, ErrTruncated
	}
	r.typ = message.Type(b[0] >> 4 & 3)
	tkl := int(b[0] & 0xf)
	r.code = codes.Code(b[1])
	r.mid = binary.BigEndian.Uint16(b[2:4])
	if tkl > 8 {
		return r, ErrTokenLength
	}
	if len(b) < 4+tkl {
		return r, ErrTruncated
	}
	if tkl > 0 {
		r.token = b[4 : 4+tkl]
	}
	opts := b[4+tkl:]
	n, err := countOptions(opts)
	if err != nil {
		return r, err
	}
	if n > MaxOptions {
		return r, errTooManyOptions
	}
	r.options = make(message.Options, 0, n)
	id := 0
	for len(opts) > 0 {
		if opts[0] == 0xff {
			if len(opts) == 1 {
				return r, ErrEmptyPayload
			}
			r.payload = opts[1:]
			break
		}
		delta, length, hdr, _ := optionHeader(opts) // validated by countOptions
		id += delta
		r.options = append(r.options, message.Option{ID: message.OptionID(id), Value: opts[hdr : hdr+length]})
		opts = opts[hdr+length:]
	}
	return r, nil
}

var errTooManyOptions = fmt.Errorf("coap: more than %d options", MaxOptions)

// countOptions walks the option area once, checking its format, and
// returns the number of options.
func countOptions(b []byte) (int, error) {
	n, id := 0, 0
	for len(b) > 0 {
		if b[0] == 0xff {
			if len(b) == 1 {
				return n, ErrEmptyPayload
			}
			return n, nil
		}
		delta, length, hdr, err := optionHeader(b)
		if err != nil {
			return n, err
		}
		id += delta
		if id > 0xffff {
			return n, ErrOptionNumber
		}
		if len(b) < hdr+length {
			return n, ErrTruncated
		}
		b = b[hdr+length:]
		n++
	}
	return n, nil
}

// optionHeader decodes one option's delta and length (RFC 7252 §3.1) and
// returns the header's size in bytes.
func optionHeader(b []byte) (delta, length, hdr int, err error) {
	delta, length, hdr = int(b[0]>>4), int(b[0]&0xf), 1
	ext := func(v int) (int, error) {
		switch v {
		case 13:
			if len(b) < hdr+1 {
				return 0, ErrTruncated
			}
			hdr++
			return int(b[hdr-1]) + 13, nil
		case 14:
			if len(b) < hdr+2 {
				return 0, ErrTruncated
			}
			hdr += 2
			return int(binary.BigEndian.Uint16(b[hdr-2:hdr])) + 269, nil
		case 15:
			return 0, ErrReservedNibble
		}
		return v, nil
	}
	if delta, err = ext(delta); err != nil {
		return 0, 0, 0, err
	}
	if length, err = ext(length); err != nil {
		return 0, 0, 0, err
	}
	return delta, length, hdr, nil
}

// badOptionError is a critical option that must be treated as unrecognized
// (RFC 7252 §5.4.1, §5.4.3, §5.4.5): answered 4.02.
type badOptionError struct {
	id     message.OptionID
	reason string
}

func (e *badOptionError) Error() string {
	return fmt.Sprintf("critical option %d: %s", e.id, e.reason)
}

// checkOptions applies the option rules of RFC 7252 §5.4 to a request's
// options: a critical option that is unknown, outside its length range or
// repeated beyond its definition is an error (4.02); an elective one in
// those cases is dropped from the returned options (treated as
// unrecognized, i.e. ignored). opts is modified in place.
func checkOptions(opts message.Options) (message.Options, error) {
	kept := opts[:0]
	var prev message.OptionID
	for i, o := range opts {
		critical := o.ID&1 == 1
		def, known := optionDefs[o.ID]
		reason := ""
		switch {
		case !known && critical && !knownCritical[o.ID]:
			reason = "not supported"
		case !known:
		case len(o.Value) < def.min || len(o.Value) > def.max:
			reason = fmt.Sprintf("length %d outside %d..%d", len(o.Value), def.min, def.max)
		case !def.repeatable && i > 0 && prev == o.ID:
			reason = "repeated"
		}
		prev = o.ID
		if reason == "" {
			kept = append(kept, o)
			continue
		}
		if critical {
			return opts, &badOptionError{id: o.ID, reason: reason}
		}
	}
	return kept, nil
}
