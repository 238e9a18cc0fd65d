// Package point is the time-series view of device data: the latest value
// and the history of every measure point, property, event and attribute a
// device reports (docs/protocol.md §4, thing/measurepoint/post and friends).
//
// Points are a projection of the message log, which stays the source of
// truth: a Projector reads the log in ID order after a persisted cursor,
// decodes each message into Samples and hands them to a Writer that stores
// the samples and the advanced cursor in one transaction. A crash between
// two batches therefore neither loses nor duplicates a sample; a restart
// resumes from the cursor.
package point

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Sample kinds, as the thing model names them.
const (
	KindPoint     = "point"     // measure points (dialect E) and properties (dialect A)
	KindEvent     = "event"     // thing/event/{id}/post
	KindAttribute = "attribute" // thing/attribute/update
)

// ValidKind reports whether k is one of the sample kinds.
func ValidKind(k string) bool {
	return k == KindPoint || k == KindEvent || k == KindAttribute
}

// Sample is one value of one named point of one device at one time.
type Sample struct {
	ProductKey string
	DeviceKey  string
	Kind       string // KindPoint, KindEvent or KindAttribute
	Name       string
	Time       time.Time
	// Value is float64, int64, string, bool, map[string]any or []any
	// (adapters also accept other Go integer and float types and store
	// anything else as JSON).
	Value     any
	MessageID int64 // the log entry the sample was decoded from
}

// HistoryQuery selects the samples of one point of one device.
type HistoryQuery struct {
	PK, DK string
	Kind   string // "" means KindPoint
	Name   string
	From   time.Time // inclusive; zero: unbounded
	To     time.Time // exclusive; zero: unbounded
	// Limit is the page size of History (<= 0 means 100, adapters cap it
	// at MaxLimit).
	Limit int
	// Cursor is the NextCursor of the previous page ("" for the first).
	Cursor     string
	Descending bool
	// Interval is the bucket width of Aggregate (>= 1 ns). Buckets are
	// aligned to the Unix epoch: a sample at t falls in the bucket
	// starting at t - t mod Interval.
	Interval time.Duration
	// Aggs names the aggregates Aggregate computes: avg, min, max, sum
	// (over numeric values only) and count (over all values). Empty means
	// all of them.
	Aggs []string
}

// MaxLimit caps HistoryQuery.Limit.
const MaxLimit = 10000

// Page is one page of History. Next is "" on the last page.
type Page struct {
	Samples []Sample
	Next    string
}

// Bucket is one interval of Aggregate. Numeric aggregates are nil when the
// bucket holds no numeric value or the aggregate was not asked for; Count
// counts every value (numeric or not). Buckets without samples are left
// out.
type Bucket struct {
	Start              time.Time
	Count              int64
	Avg, Min, Max, Sum *float64
}

// ExportQuery selects the samples of one device for export, ordered by
// point name, then time, then message ID.
type ExportQuery struct {
	PK, DK string
	Kind   string   // "" means KindPoint
	Names  []string // empty: every point
	From   time.Time
	To     time.Time
}

// Aggregate names accepted in HistoryQuery.Aggs.
var AggNames = []string{"avg", "min", "max", "count", "sum"}

// ErrInvalid is a query the store cannot answer as asked (a malformed
// cursor, an unknown aggregate).
var ErrInvalid = errors.New("point: invalid query")

// Writer stores projected samples. Implementations must be safe for
// concurrent use.
type Writer interface {
	// Project stores samples and sets the cursor called name to upto in
	// one transaction: either both are stored or neither. Samples whose
	// MessageID is at or below the stored cursor are ignored, so
	// projecting the same batch again stores nothing twice. upto never
	// moves the cursor backwards.
	Project(ctx context.Context, name string, upto int64, samples []Sample) error
	// Cursor returns the last log ID projected under name (0 if none).
	Cursor(ctx context.Context, name string) (int64, error)
}

// Reader answers queries over stored samples. Implementations must be
// safe for concurrent use.
type Reader interface {
	// Latest returns the newest sample of each point of kind of one
	// device, ordered by name. Newest is by sample time, then message ID.
	Latest(ctx context.Context, pk, dk, kind string) ([]Sample, error)
	// History returns one page of samples of one point, ordered by time
	// then message ID (both descending with q.Descending).
	History(ctx context.Context, q HistoryQuery) (Page, error)
	// Aggregate returns q.Interval buckets over [q.From, q.To), oldest
	// first.
	Aggregate(ctx context.Context, q HistoryQuery) ([]Bucket, error)
	// Export calls fn for every selected sample in order, reading in
	// chunks so that no read transaction stays open while fn blocks. An
	// error from fn stops the export and is returned.
	Export(ctx context.Context, q ExportQuery, fn func(Sample) error) error
}

// Store is a Writer and a Reader.
type Store interface {
	Writer
	Reader
}

// EncodeCursor returns the opaque paging token for the position after the
// sample at (ts, msgID) in unix nanoseconds.
func EncodeCursor(ts, msgID int64) string {
	var b [17]byte
	b[0] = 1 // version
	binary.BigEndian.PutUint64(b[1:], uint64(ts))
	binary.BigEndian.PutUint64(b[9:], uint64(msgID))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// DecodeCursor parses a token from EncodeCursor.
func DecodeCursor(s string) (ts, msgID int64, err error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != 17 || b[0] != 1 {
		return 0, 0, fmt.Errorf("%w: malformed cursor", ErrInvalid)
	}
	return int64(binary.BigEndian.Uint64(b[1:])), int64(binary.BigEndian.Uint64(b[9:])), nil
}
