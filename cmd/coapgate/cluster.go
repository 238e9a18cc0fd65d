package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/coapgate/coapgate/internal/config"
	"github.com/coapgate/coapgate/internal/lease"
	"github.com/coapgate/coapgate/internal/lease/pglease"
	"github.com/prometheus/client_golang/prometheus"
)

// newLeases picks the Elector of background work: on PostgreSQL, nodes
// sharing the database take turns through advisory locks (monitor must
// run for the node's lifetime, its end releases the leases); the embedded
// store has one node, which holds every lease (monitor nil).
func newLeases(cfg config.Config, reg prometheus.Registerer, log *slog.Logger) (lease.Elector, func(context.Context), error) {
	if cfg.Store.Driver != "postgres" {
		return lease.Local{}, nil, nil
	}
	node := cfg.Cluster.Node
	if node == "" {
		node, _ = os.Hostname()
	}
	e, err := pglease.New(pglease.Options{
		URL: string(cfg.Store.PostgresURL), Node: node,
		Retry: cfg.Cluster.LeaseRetry, Check: cfg.Cluster.LeaseRetry, Registerer: reg, Logger: log,
	})
	if err != nil {
		return nil, nil, err
	}
	return e, e.Monitor, nil
}
