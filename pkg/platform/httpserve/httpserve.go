// Package httpserve runs an HTTP server for a service's lifetime: listen,
// serve until the context ends, then shut down gracefully. The breach
// intake and the health endpoints share it.
package httpserve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Serve listens on addr and serves h until ctx ends, then gives requests
// in flight up to grace to finish. name labels the log line that reports
// the bound address (useful with port 0).
func Serve(ctx context.Context, name, addr string, h http.Handler, grace time.Duration, log *slog.Logger) error {
	return ServeTLS(ctx, name, addr, h, nil, grace, log)
}

// ServeTLS is Serve speaking HTTPS with tlsCfg (plain HTTP when nil).
func ServeTLS(ctx context.Context, name, addr string, h http.Handler, tlsCfg *tls.Config, grace time.Duration, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: listen %s: %w", name, addr, err)
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 15 * time.Second}
	log.Info(name+" listening", slog.String("addr", ln.Addr().String()))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
