package api

import (
	"fmt"
	"net/http"
	"time"

	"github.com/coapgate/coapgate/internal/apikey"
)

// APIKey is the JSON form of an API key. Key (the bearer secret) is set only
// in the response to a create.
type APIKey struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Key       string    `json:"key,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
}

type createAPIKeyRequest struct {
	Name string `json:"name"`
}

func (s *server) createAPIKey(w http.ResponseWriter, r *http.Request) error {
	var req createAPIKeyRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if err := validateName(req.Name); err != nil {
		return err
	}
	secret, k, err := apikey.New(req.Name, s.now())
	if err != nil {
		return fmt.Errorf("generate api key: %w", err)
	}
	if err := s.o.Keys.CreateAPIKey(r.Context(), k); err != nil {
		return storeError(err, fmt.Sprintf("api key %q", k.ID))
	}
	s.audit(r, "api key created", "id", k.ID)
	writeJSON(w, http.StatusCreated, APIKey{ID: k.ID, Name: k.Name, Key: secret, CreatedAt: k.CreatedAt.UTC()})
	return nil
}

func (s *server) listAPIKeys(w http.ResponseWriter, r *http.Request) error {
	if err := allowQuery(r); err != nil {
		return err
	}
	ks, err := s.o.Keys.ListAPIKeys(r.Context())
	if err != nil {
		return fmt.Errorf("list api keys: %w", err)
	}
	out := List[APIKey]{Items: make([]APIKey, 0, len(ks))}
	for _, k := range ks {
		out.Items = append(out.Items, APIKey{ID: k.ID, Name: k.Name, CreatedAt: k.CreatedAt.UTC()})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) deleteAPIKey(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := s.o.Keys.DeleteAPIKey(r.Context(), id); err != nil {
		return storeError(err, fmt.Sprintf("api key %q", id))
	}
	s.auth.forget(id)
	s.audit(r, "api key deleted", "id", id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
