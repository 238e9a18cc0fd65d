package coapx

import (
	"net/netip"
	"testing"
	"time"
)

var t0 = time.Unix(1_800_000_000, 0)

func TestFIFOCacheExpiry(t *testing.T) {
	c := newFIFOCache[int, string](100)
	c.put(1, "a", 10*time.Second, t0)
	c.put(2, "b", 10*time.Second, t0.Add(5*time.Second))
	if _, ok := c.get(1, t0.Add(9*time.Second)); !ok {
		t.Fatal("entry 1 gone before its lifetime")
	}
	if _, ok := c.get(1, t0.Add(10*time.Second)); ok {
		t.Fatal("entry 1 alive at exactly its expiry")
	}
	c.expire(t0.Add(11 * time.Second))
	if c.len() != 1 {
		t.Fatalf("len %d after expiring one of two", c.len())
	}
	if _, ok := c.get(2, t0.Add(11*time.Second)); !ok {
		t.Fatal("entry 2 expired early")
	}
}

func TestFIFOCacheBoundEvictsOldest(t *testing.T) {
	c := newFIFOCache[int, int](3)
	evicted := 0
	for i := range 5 {
		evicted += c.put(i, i, time.Hour, t0)
	}
	if c.len() != 3 || evicted != 2 {
		t.Fatalf("len %d evicted %d, want 3 and 2", c.len(), evicted)
	}
	for i, want := range []bool{false, false, true, true, true} {
		if _, ok := c.get(i, t0); ok != want {
			t.Errorf("key %d present=%v, want %v", i, ok, want)
		}
	}
}

func TestFIFOCacheReplaceAndDelete(t *testing.T) {
	c := newFIFOCache[int, int](10)
	c.put(1, 1, time.Second, t0)
	c.put(1, 2, time.Hour, t0.Add(500*time.Millisecond)) // replaced: the old queue slot is stale
	c.expire(t0.Add(2 * time.Second))
	if e, ok := c.get(1, t0.Add(2*time.Second)); !ok || e.val != 2 {
		t.Fatal("replacement expired with the entry it replaced")
	}
	c.del(1)
	if _, ok := c.get(1, t0); ok {
		t.Fatal("deleted entry still present")
	}
	// Queue compaction keeps working over many cycles.
	for i := range 10000 {
		c.put(i, i, time.Millisecond, t0.Add(time.Duration(i)*time.Millisecond))
	}
	if c.len() > 10 || len(c.q)-c.head > 2048 {
		t.Fatalf("cache not bounded: len %d queue %d", c.len(), len(c.q)-c.head)
	}
}

func TestDedupStates(t *testing.T) {
	d := newDedupCache(1 << 12)
	k := exchangeKey{peer: netip.MustParseAddrPort("10.0.0.1:5683"), mid: 7}
	if st, _, _ := d.begin(k, time.Minute, t0); st != dedupNew {
		t.Fatalf("first copy: %v", st)
	}
	if st, _, _ := d.begin(k, time.Minute, t0); st != dedupInFlight {
		t.Fatalf("copy while processing: %v", st)
	}
	d.complete(k, []byte("ack"), t0)
	st, resp, _ := d.begin(k, time.Minute, t0.Add(30*time.Second))
	if st != dedupDone || string(resp) != "ack" {
		t.Fatalf("after completion: %v %q", st, resp)
	}
	if st, _, _ := d.begin(k, time.Minute, t0.Add(time.Minute)); st != dedupNew {
		t.Fatalf("after EXCHANGE_LIFETIME: %v, want new", st)
	}
	other := exchangeKey{peer: netip.MustParseAddrPort("10.0.0.1:5684"), mid: 7}
	if st, _, _ := d.begin(other, time.Minute, t0); st != dedupNew {
		t.Fatal("same MID from another port treated as duplicate")
	}
	k2 := exchangeKey{peer: k.peer, mid: 8}
	d.begin(k2, time.Minute, t0)
	d.abort(k2)
	if st, _, _ := d.begin(k2, time.Minute, t0); st != dedupNew {
		t.Fatal("aborted exchange not forgotten")
	}
}

func TestOptionCodec(t *testing.T) {
	for _, v := range []uint32{0, 1, 255, 256, 65535, 1 << 24, 1<<32 - 1} {
		b := EncodeUint(v)
		got, ok := DecodeUint(b)
		if !ok || got != v {
			t.Fatalf("uint %d: %x -> %d %v", v, b, got, ok)
		}
		if len(b) > 0 && b[0] == 0 {
			t.Fatalf("uint %d not minimal: %x", v, b)
		}
	}
	if _, ok := DecodeUint([]byte{1, 2, 3, 4, 5}); ok {
		t.Fatal("5-byte uint accepted")
	}
	for _, b := range []block{{0, true, 6}, {5, false, 0}, {1<<20 - 1, true, 4}} {
		got, ok := decodeBlock(b.encode())
		if !ok || got != b {
			t.Fatalf("block %+v round trip: %+v %v", b, got, ok)
		}
	}
	if _, ok := decodeBlock(block{num: 1, szx: 7}.encode()); ok {
		t.Fatal("BERT szx accepted over UDP")
	}
	for size, want := range map[int]uint8{16: 0, 64: 2, 1024: 6} {
		if got := szxFor(size); got != want {
			t.Errorf("szxFor(%d) = %d, want %d", size, got, want)
		}
	}
}
