package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lockdown/lockdown/pkg/events/readmodel"
	"github.com/lockdown/lockdown/pkg/events/report"
	"github.com/lockdown/lockdown/pkg/platform/natsconn"
	"github.com/lockdown/lockdown/pkg/platform/stream"
)

// The reading commands (incidents, status, report, review --edit, the
// drill's progress) read the read model containment keeps in NATS
// (events.BucketIncidents, events.BucketReports) as the operator: no
// database access, no knowledge of any service's tables.

// natsFlags are the NATS connection flags every command shares.
type natsFlags struct {
	url, user *string
	// password is the user's, from LOCKDOWN_NATS_PASSWORD, or from the
	// file passwordFile names (never the value in a flag: it would show in
	// the process list).
	password     string
	passwordFile *string
}

func addNATSFlags(fs *flag.FlagSet, defaultUser string) natsFlags {
	return natsFlags{
		url:          fs.String("nats-url", EnvOr("NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL (LOCKDOWN_NATS_URL)"),
		user:         fs.String("nats-user", EnvOr("NATS_USER", defaultUser), "NATS user (LOCKDOWN_NATS_USER; its password from LOCKDOWN_NATS_PASSWORD or --nats-password-file)"),
		password:     EnvOr("NATS_PASSWORD", ""),
		passwordFile: fs.String("nats-password-file", EnvOr("NATS_PASSWORD_FILE", ""), "file holding the NATS user's password (LOCKDOWN_NATS_PASSWORD_FILE; a mounted secret), instead of LOCKDOWN_NATS_PASSWORD"),
	}
}

func (f natsFlags) connect(ctx context.Context) (*natsconn.Conn, error) {
	password := f.password
	if f.passwordFile != nil && *f.passwordFile != "" {
		b, err := os.ReadFile(*f.passwordFile)
		if err != nil {
			return nil, fmt.Errorf("NATS password file: %w", err)
		}
		if password = strings.TrimRight(string(b), "\r\n"); password == "" {
			return nil, fmt.Errorf("NATS password file %s is empty", *f.passwordFile)
		}
	}
	return natsconn.Connect(ctx, natsconn.Options{URL: *f.url, User: *f.user, Password: password, Name: "lockdown-cli"})
}

// closeNATS closes a command's NATS connection once the command is done
// with it: JetStream has acknowledged whatever the command published, so a
// drain that fails loses nothing, and its error is dropped.
func CloseNATS(conn *natsconn.Conn) { _ = conn.Close(context.Background()) }

// readModel is an open connection to the read model.
type ReadModel struct {
	conn *natsconn.Conn
	*stream.ReadModel
}

// openReadModel connects and binds to the read model's buckets, giving up
// after 15 s.
func openReadModel(ctx context.Context, f natsFlags) (*ReadModel, error) {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return openReadModelUntil(cctx, f)
}

// openReadModelUntil keeps trying until ctx ends: what a watching command
// (status --watch, the console) does when NATS is away at its start.
func openReadModelUntil(cctx context.Context, f natsFlags) (*ReadModel, error) {
	conn, err := f.connect(cctx)
	if err != nil {
		return nil, err
	}
	rm, err := stream.OpenReadModel(cctx, conn.JS)
	if err != nil {
		CloseNATS(conn)
		return nil, conn.Explain(err)
	}
	return &ReadModel{conn: conn, ReadModel: rm}, nil
}

func (r *ReadModel) Close() { CloseNATS(r.conn) }

// withLastPlan fills a report's not-covered column from the last `lockdown
// plan` kept in NATS (none kept, or an install without the bucket: the
// column stays unknown).
func withLastPlan(ctx context.Context, js jetstream.JetStream, r *report.Report) {
	if p, err := stream.LastPlan(ctx, js); err == nil && p != nil {
		r.AddCoverage(*p)
	}
}

// finalReport waits until containment has written the closed incident's
// final report to the read model, and returns it.
func FinalReport(ctx context.Context, rm *ReadModel, id string) (report.Report, error) {
	docs, errs, err := rm.Watch(ctx, id)
	if err != nil {
		return report.Report{}, err
	}
	for {
		select {
		case <-ctx.Done():
			return report.Report{}, fmt.Errorf("the final report of %s did not reach the read model: %w", id, ctx.Err())
		case err := <-errs:
			return report.Report{}, err
		case doc, ok := <-docs:
			if !ok {
				return report.Report{}, fmt.Errorf("the final report of %s did not reach the read model: %w", id, ctx.Err())
			}
			if doc.Report.State == readmodel.ReportFinal {
				return rm.Report(ctx, id)
			}
		}
	}
}
