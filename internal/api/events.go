package api

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/coapgate/coapgate/internal/event"
)

// Event is the JSON form of a device event.
type Event struct {
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	At        time.Time `json:"at"`
	Transport string    `json:"transport"`
	Peer      string    `json:"peer"`
}

// listDeviceEvents lists an existing device's online/offline transitions,
// oldest first (404 for an unknown device).
func (s *server) listDeviceEvents(w http.ResponseWriter, r *http.Request) error {
	if err := allowQuery(r, "limit", "cursor", "after"); err != nil {
		return err
	}
	limit, err := parseLimit(r)
	if err != nil {
		return err
	}
	var after int64
	v, err := pageCursor(r.URL.Query())
	if err != nil {
		return err
	}
	if v != "" {
		if after, err = strconv.ParseInt(v, 10, 64); err != nil || after < 1 {
			return badRequest("cursor must be a positive event id (the nextCursor of the previous page)")
		}
	}
	d, _, err := s.loadDevice(r)
	if err != nil {
		return err
	}
	out := List[Event]{Items: []Event{}}
	if s.o.Events == nil {
		writeJSON(w, http.StatusOK, out)
		return nil
	}
	evs, err := s.o.Events.ListEvents(r.Context(), d.ProductKey, d.DeviceKey, after, limit)
	if err != nil {
		return fmt.Errorf("list events: %w", err)
	}
	for _, e := range evs {
		out.Items = append(out.Items, eventJSON(e))
	}
	if len(evs) == limit {
		out.NextCursor = strconv.FormatInt(evs[len(evs)-1].ID, 10)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func eventJSON(e event.Event) Event {
	return Event{ID: strconv.FormatInt(e.ID, 10), Type: string(e.Type), At: e.At.UTC(), Transport: e.Transport, Peer: e.Peer}
}
