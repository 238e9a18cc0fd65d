package sqlitestore

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/point"
	"github.com/coapgate/coapgate/internal/point/pointtest"
)

var pointBase = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func sample(name string, at time.Duration, msg int64, v any) point.Sample {
	return point.Sample{ProductKey: "p1", DeviceKey: "d1", Kind: point.KindPoint, Name: name,
		Time: pointBase.Add(at), Value: v, MessageID: msg}
}

// TestPointsPlans: history pages and aggregation are range searches on
// the primary key, history without a sort.
func TestPointStore(t *testing.T) {
	pointtest.Run(t, func(t *testing.T) point.Store {
		s, _ := openTemp(t)
		return s
	})
}

func TestPointsPlans(t *testing.T) {
	s, _ := openTemp(t)
	for _, q := range []struct {
		name, sql string
		want      string // the key prefix the search must use
		noSort    bool
	}{
		{"history asc", `SELECT ts FROM points WHERE product_key = 'p' AND device_key = 'd' AND kind = 'point' AND name = 'n' AND ts >= 1 AND ts < 9 AND ts >= 2 AND (ts <> 2 OR msg_id > 3) ORDER BY ts, msg_id LIMIT 10`, "name=? AND ts>?", true},
		{"history desc", `SELECT ts FROM points WHERE product_key = 'p' AND device_key = 'd' AND kind = 'point' AND name = 'n' AND ts >= 1 AND ts < 9 AND ts < 3 AND (ts <> 2 OR msg_id < 3) ORDER BY ts DESC, msg_id DESC LIMIT 10`, "name=? AND ts>?", true},
		{"latest", `SELECT name FROM latest_points WHERE product_key = 'p' AND device_key = 'd' AND kind = 'point' ORDER BY name`, "kind=?", true},
	} {
		t.Run(q.name, func(t *testing.T) {
			rows, err := s.reader.Query("EXPLAIN QUERY PLAN " + q.sql)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var plan []string
			for rows.Next() {
				var id, parent, notused int
				var detail string
				if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, detail)
			}
			all := fmt.Sprint(plan)
			t.Logf("plan: %s", all)
			if !strings.Contains(all, "SEARCH") || !strings.Contains(all, "PRIMARY KEY") || !strings.Contains(all, q.want) {
				t.Fatalf("plan %q: want a primary key search", all)
			}
			if q.noSort && strings.Contains(all, "TEMP B-TREE") {
				t.Fatalf("plan %q sorts", all)
			}
		})
	}
}
