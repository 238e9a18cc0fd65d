package sqlitestore

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// TestRetentionPlans checks that retention's searches seek by index
// (never scan a whole table) and walk the expired rows in index order.
func TestRetentionPlans(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name, query string
		args        []any
		want        []string
	}{
		{"messages", selectExpiredMessages, []any{"p", 1, 2, 10}, []string{"messages_product_received (product_key=? AND received_at<?)"}},
		{"events", selectExpiredEvents, []any{"p", 1, 10}, []string{"device_events_product_at (product_key=? AND at<?)"}},
		{"commands", selectExpiredCommands, []any{"p", 1, 10}, []string{"commands_finished_created (product_key=? AND created_at<?)"}},
		{"dead letters", selectExpiredDeadLetters, []any{1, 10}, []string{"dead_letters_created (created_at<?)"}},
		{"points", selectExpiredPoints, []any{"p", 1, 10}, []string{"SEARCH l USING PRIMARY KEY (product_key=?)", "SEARCH p USING PRIMARY KEY (product_key=? AND device_key=? AND kind=? AND name=? AND ts<?)"}},
		{"rollups", selectExpiredRollups, []any{"p", 60, 1, 10}, []string{"SEARCH l USING PRIMARY KEY (product_key=?)", "SEARCH r USING PRIMARY KEY (product_key=? AND device_key=? AND kind=? AND name=? AND res=? AND bucket<?)"}},
		{"product keys", productKeysSQL("messages"), nil, []string{"messages_"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows, err := s.reader.QueryContext(ctx, "EXPLAIN QUERY PLAN "+tc.query, tc.args...)
			if err != nil {
				t.Fatalf("explain: %v", err)
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
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("plan %s: want %q", all, w)
				}
			}
			if strings.Contains(all, "TEMP B-TREE") {
				t.Errorf("plan %s sorts; want index order", all)
			}
			for _, tbl := range []string{"messages", "points", "point_rollups", "device_events", "commands", "dead_letters"} {
				if strings.Contains(all, "SCAN "+tbl+" ") || strings.HasSuffix(strings.TrimSuffix(all, "]"), "SCAN "+tbl) {
					t.Errorf("plan %s scans %s", all, tbl)
				}
			}
		})
	}
}
