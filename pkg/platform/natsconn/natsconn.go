// Package natsconn connects a Lockdown process to NATS and JetStream.
package natsconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/lockdown/lockdown/pkg/events"
)

// Conn is a NATS connection with its JetStream context.
type Conn struct {
	NC *nats.Conn
	JS jetstream.JetStream
}

// Options of Connect.
type Options struct {
	URL, User, Password string
	// Name identifies the client in the server's monitoring.
	Name   string
	Logger *slog.Logger
}

// Connect dials NATS, honouring ctx for the initial connection, and keeps
// reconnecting afterwards.
func Connect(ctx context.Context, o Options) (*Conn, error) {
	logger := o.Logger
	if logger == nil {
		logger = slog.Default()
	}
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil means a deliberate close or drain
				logger.Warn("nats disconnected", slog.Any("error", err))
			}
		}),
		// Asynchronous errors (a permission violation, a slow consumer)
		// go to the service's log instead of nats.go's default stderr print.
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			logger.Error("nats asynchronous error", slog.String("subject", subject), slog.Any("error", err))
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { logger.Info("nats reconnected", slog.String("url", nc.ConnectedUrlRedacted())) }),
	}
	if o.User != "" {
		// Each user may subscribe only below its own inbox prefix
		// (events.InboxPrefix), so replies and pull deliveries go there.
		opts = append(opts, nats.UserInfo(o.User, o.Password), nats.CustomInboxPrefix(events.InboxPrefix(o.User)))
	}
	if dl, ok := ctx.Deadline(); ok {
		opts = append(opts, nats.Timeout(time.Until(dl)))
	}
	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := nats.Connect(o.URL, opts...)
		done <- result{nc, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		go func() {
			if r := <-done; r.nc != nil {
				r.nc.Close()
			}
		}()
		return nil, fmt.Errorf("nats connect: %w", ctx.Err())
	}
	if r.err != nil {
		return nil, fmt.Errorf("nats connect: %w", r.err)
	}
	js, err := jetstream.New(r.nc)
	if err != nil {
		r.nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	warmUp(ctx, js)
	return &Conn{NC: r.nc, JS: js}, nil
}

// warmUp makes one JetStream API round trip, asking again when it goes
// unanswered. On a cluster the first request's reply was seen to be lost
// now and then (the reply subscription's interest had not reached the
// server that answered); once one reply has come back, later requests and
// publish acknowledgements arrive. Any answer, even an error, will do.
func warmUp(ctx context.Context, js jetstream.JetStream) {
	if js.Conn().ConnectedClusterName() == "" {
		return // a lone server answers itself
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := js.AccountInfo(actx)
		cancel()
		if err == nil || !errors.Is(err, context.DeadlineExceeded) {
			return
		}
		// A user without JetStream rights (the SIEM) is refused, which
		// the server says only asynchronously: no answer will come.
		if errors.Is(js.Conn().LastError(), nats.ErrPermissionViolation) {
			return
		}
	}
}

// Close drains the connection (pending publishes are flushed) within ctx.
func (c *Conn) Close(ctx context.Context) error {
	done := make(chan struct{})
	c.NC.SetClosedHandler(func(*nats.Conn) { close(done) })
	if err := c.NC.Drain(); err != nil {
		c.NC.Close()
		return err
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		c.NC.Close()
		return ctx.Err()
	}
}

// Explain adds the server's last permissions violation to err. A publish or
// request the server refuses for permissions is reported only
// asynchronously, so the caller otherwise sees a bare timeout.
func (c *Conn) Explain(err error) error {
	if err == nil {
		return nil
	}
	if last := c.NC.LastError(); errors.Is(last, nats.ErrPermissionViolation) {
		return fmt.Errorf("%w (server refused: %v)", err, last)
	}
	return err
}
