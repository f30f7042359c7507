// Package ingest receives Vault's audit stream — a listener for the socket
// audit device and a follower for a file audit device — and writes it to
// the store in batches. Vault refuses requests it cannot audit, so the
// listener only reads lines into a bounded buffer and never waits for
// PostgreSQL; when the buffer is full a line is dropped, counted and
// logged (the file device kept beside it still has it, and the follower
// re-reads it: entries are de-duplicated by request id and type).
package ingest

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockdown/lockdown/pkg/platform/retry"
	"github.com/lockdown/lockdown/services/assessor/internal/audit"
)

// Stats count what ingestion did; every line is accounted for.
type Stats struct {
	Received  atomic.Int64 // lines read from a source
	Stored    atomic.Int64 // new entries written
	Repeated  atomic.Int64 // entries already stored (replays, re-reads)
	Malformed atomic.Int64 // lines that are not audit entries (skipped)
	Dropped   atomic.Int64 // lines dropped because the buffer was full
}

// Sink writes a batch and reports how many entries were new.
type Sink interface {
	Insert(ctx context.Context, batch []audit.Entry, patternHit func(audit.Entry) bool) (int64, error)
}

// Options of a Pipeline.
type Options struct {
	// Buffer is how many lines wait in memory for the writer.
	Buffer int
	// BatchSize and FlushEvery bound a batch.
	BatchSize  int
	FlushEvery time.Duration
	// MaxLine bounds one audit line (Vault's can be large).
	MaxLine int
	// Parsers is how many goroutines parse lines, Writers how many write
	// batches on their own connections (default 1 each).
	Parsers, Writers int
	// Tenants find a path's tenant; PatternHit flags suspicious paths.
	Tenants    *audit.Templates
	PatternHit func(audit.Entry) bool
	Logger     *slog.Logger
}

// line is one audit line and the audit device it came through: Vault
// HMACs accessors with a salt of each device's own, so the device is part
// of what an accessor means.
type line struct {
	device string
	raw    []byte
}

// Pipeline buffers lines from any number of sources and writes them.
type Pipeline struct {
	opts  Options
	sink  Sink
	lines chan line
	Stats Stats

	lastDropLog atomic.Int64
	// followers counts running file followers; catchUp asks one of them
	// for a pass to the end of the file now, answered by closing the
	// channel it carries.
	followers atomic.Int32
	catchUp   chan chan struct{}
}

// NewPipeline prepares a pipeline; Run starts its writer.
func NewPipeline(sink Sink, opts Options) *Pipeline {
	return &Pipeline{opts: opts, sink: sink, lines: make(chan line, opts.Buffer), catchUp: make(chan chan struct{})}
}

// CatchUp makes a running file follower read to the current end of its
// file now instead of at its next poll, and waits (up to max) until it
// has: a line Vault wrote before the breach was reported is then received.
// With no follower (socket only: Vault hands each line over before it
// answers) there is nothing to wait for.
func (p *Pipeline) CatchUp(ctx context.Context, max time.Duration) bool {
	if p.followers.Load() == 0 {
		return true
	}
	timer := time.NewTimer(max)
	defer timer.Stop()
	reply := make(chan struct{})
	select {
	case p.catchUp <- reply:
	case <-timer.C:
		return false
	case <-ctx.Done():
		return false
	}
	select {
	case <-reply:
		return true
	case <-timer.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// Offer hands a line written by the named audit device to the writer
// without ever blocking the caller.
func (p *Pipeline) Offer(device string, raw []byte) {
	p.Stats.Received.Add(1)
	select {
	case p.lines <- line{device, raw}:
	default:
		n := p.Stats.Dropped.Add(1)
		// One log line per second at most while dropping.
		now := time.Now().Unix()
		if last := p.lastDropLog.Load(); now > last && p.lastDropLog.CompareAndSwap(last, now) {
			p.opts.Logger.Error("audit buffer full: dropping lines (the file audit device still has them)", slog.Int64("dropped_total", n))
		}
	}
}

// Put hands a line written by the named audit device to the writer,
// waiting while the buffer is full: for sources that can wait (a file on
// disk), unlike Vault's socket.
func (p *Pipeline) Put(ctx context.Context, device string, raw []byte) error {
	p.Stats.Received.Add(1)
	select {
	case p.lines <- line{device, raw}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run parses lines into batches and writes them until ctx ends, then
// flushes what is buffered. Parsers and writers run in their own goroutines
// so the Go side and PostgreSQL (one backend per writer) work at once. A failed
// write is retried with backoff, holding its batch: meanwhile the buffer
// fills, and only then does the socket listener drop lines.
func (p *Pipeline) Run(ctx context.Context) {
	// Writes outlive ctx by a grace period so a shutdown flushes the buffer.
	writeCtx, cancelWrite := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWrite()
	batches := make(chan []audit.Entry, 2)
	written := make(chan struct{})
	var writers sync.WaitGroup
	for range max(p.opts.Writers, 1) {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for b := range batches {
				p.write(writeCtx, b)
			}
		}()
	}
	go func() { writers.Wait(); close(written) }()
	var parsers sync.WaitGroup
	for range max(p.opts.Parsers, 1) {
		parsers.Add(1)
		go func() { defer parsers.Done(); p.parse(ctx, batches) }()
	}
	parsers.Wait()
	close(batches)
	timer := time.AfterFunc(10*time.Second, cancelWrite)
	<-written
	timer.Stop()
}

// parse turns lines into batches until ctx ends, then drains the buffer.
func (p *Pipeline) parse(ctx context.Context, batches chan<- []audit.Entry) {
	dec := audit.NewDecoder(p.opts.Tenants)
	batch := make([]audit.Entry, 0, p.opts.BatchSize)
	send := func() {
		if len(batch) > 0 {
			batches <- batch
			batch = make([]audit.Entry, 0, p.opts.BatchSize)
		}
	}
	add := func(l line) {
		e, err := dec.Decode(l.raw)
		if err != nil {
			p.Stats.Malformed.Add(1)
			p.opts.Logger.Warn("malformed audit line skipped", slog.Any("error", err), slog.String("device", l.device), slog.Int("bytes", len(l.raw)))
			return
		}
		e.Device = l.device
		batch = append(batch, e)
		if len(batch) >= p.opts.BatchSize {
			send()
		}
	}
	tick := time.NewTicker(p.opts.FlushEvery)
	defer tick.Stop()
	for {
		select {
		case l := <-p.lines:
			add(l)
		case <-tick.C:
			send()
		case <-ctx.Done():
			for {
				select {
				case l := <-p.lines:
					add(l)
				default:
					send()
					return
				}
			}
		}
	}
}

// write stores one batch, retrying until it succeeds or ctx ends.
func (p *Pipeline) write(ctx context.Context, batch []audit.Entry) {
	err := retry.Do(ctx, retry.Default(), func(ctx context.Context) error {
		n, err := p.sink.Insert(ctx, batch, p.opts.PatternHit)
		if err == nil {
			p.Stats.Stored.Add(n)
			p.Stats.Repeated.Add(int64(len(batch)) - n)
		}
		return err
	}, func(err error, _ time.Duration) {
		p.opts.Logger.Warn("audit batch not stored; retrying", slog.Int("entries", len(batch)), slog.Any("error", err))
	})
	if err != nil {
		p.opts.Logger.Error("audit batch abandoned at shutdown (the file audit device still has it)", slog.Int("entries", len(batch)))
	}
}

// Settle waits, up to max, until every line received so far is accounted
// for (stored, repeated, malformed or dropped): an assessment then sees the
// audit log up to the moment it was asked for.
func (p *Pipeline) Settle(ctx context.Context, max time.Duration) bool {
	deadline := time.Now().Add(max)
	for {
		s := &p.Stats
		if s.Received.Load() == s.Stored.Load()+s.Repeated.Load()+s.Malformed.Load()+s.Dropped.Load() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// ReadLines feeds every line of r, written by the named audit device, to
// the pipeline; a line longer than MaxLine is counted as malformed and
// skipped.
func (p *Pipeline) ReadLines(device string, r io.Reader) error {
	br := bufio.NewReaderSize(r, 64*1024)
	for {
		line, err := readLine(br, p.opts.MaxLine)
		if errors.Is(err, errLineTooLong) {
			p.Stats.Received.Add(1)
			p.Stats.Malformed.Add(1)
			continue
		}
		if len(line) > 0 {
			p.Offer(device, line)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

var errLineTooLong = errors.New("audit line too long")

// readLine returns the next line without its newline; a last line without
// a newline is returned with io.EOF.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var out []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(out)+len(chunk) > max {
			// Skip to the end of this line.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			return nil, errLineTooLong
		}
		out = append(out, chunk...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if n := len(out); n > 0 && out[n-1] == '\n' {
			out = out[:n-1]
		}
		return out, err
	}
}

// Listener accepts Vault's socket audit device (TCP, JSON lines).
type Listener struct {
	ln       net.Listener
	device   string
	pipeline *Pipeline
	wg       sync.WaitGroup
}

// Listen binds addr for the named socket audit device (its path in
// `vault audit list`; every node of a cluster shares it).
func Listen(addr, device string, p *Pipeline) (*Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &Listener{ln: ln, device: device, pipeline: p}, nil
}

// Addr is the bound address.
func (l *Listener) Addr() string { return l.ln.Addr().String() }

// Serve accepts connections until ctx ends.
func (l *Listener) Serve(ctx context.Context) error {
	go func() { <-ctx.Done(); _ = l.ln.Close() }() // unblocks Accept, and Serve returns nil
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			l.wg.Wait()
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			// Closed twice when ctx ends first: the second close's error is expected.
			defer func() { _ = conn.Close() }()
			stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
			defer stop()
			if err := l.pipeline.ReadLines(l.device, conn); err != nil && ctx.Err() == nil {
				l.pipeline.opts.Logger.Debug("audit connection closed", slog.Any("error", err))
			}
		}()
	}
}
