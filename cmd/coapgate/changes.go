package main

import (
	"fmt"
	"log/slog"

	"github.com/coapgate/coapgate/internal/config"
	"github.com/coapgate/coapgate/internal/registry"
	"github.com/coapgate/coapgate/internal/registry/natschanges"
	"github.com/nats-io/nats.go"
)

// deviceChanges returns the feed device changes travel on: through NATS
// to every node when cluster.nats_url is set, else within this process.
// closeFn releases it after the listeners stopped.
func deviceChanges(cfg config.Config, log *slog.Logger) (feed registry.ChangeFeed, closeFn func(), err error) {
	url := string(cfg.Cluster.NATSURL)
	if url == "" {
		return &registry.LocalChanges{}, func() {}, nil
	}
	nc, err := nats.Connect(url, nats.Name("coapgate device changes"), nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("cluster: NATS disconnected; device changes of other nodes arrive through the device cache TTL meanwhile", "err", err)
		}),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("cluster: NATS reconnected") }))
	if err != nil {
		return nil, nil, fmt.Errorf("cluster.nats_url: connect: %w", err)
	}
	f, err := natschanges.New(nc, "")
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("cluster.nats_url: %w", err)
	}
	log.Info("cluster: device changes shared through NATS", "subject", natschanges.DefaultSubject)
	return f, func() { _ = f.Close(); nc.Close() }, nil
}
