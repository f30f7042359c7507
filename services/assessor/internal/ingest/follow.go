package ingest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"syscall"
	"time"
)

// Follow tails a file audit device's log until ctx ends: it reads what is
// appended, starts again from the top when the file is truncated, and
// reopens it when it is rotated (a new file at the path). A line is handed
// on only once its newline is written. Reading from the top again after a
// restart is safe: entries are de-duplicated by request id and type. Unlike
// the socket listener, the follower waits when the buffer is full: the file
// keeps the lines, so nothing is dropped.
//
// device names the file audit device that writes the file.
func (p *Pipeline) Follow(ctx context.Context, path, device string, poll time.Duration) error {
	var f *os.File
	var ino uint64
	var offset int64
	var carry []byte
	defer func() {
		if f != nil {
			_ = f.Close() // read only
		}
	}()
	buf := make([]byte, 256*1024)
	p.followers.Add(1)
	defer p.followers.Add(-1)
	var reply chan struct{} // a CatchUp waiting for the end of this pass
	for {
		st, err := os.Stat(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			// Rotated away and not yet recreated: wait.
		case err != nil:
			return err
		default:
			cur := inode(st)
			if f == nil || cur != ino || st.Size() < offset {
				if f != nil {
					p.opts.Logger.Info("audit file rotated or truncated; reading from the start", slog.String("path", path))
					_ = f.Close() // read only
				}
				if f, err = os.Open(path); err != nil {
					return err
				}
				ino, offset, carry = cur, 0, nil
			}
			for offset < st.Size() {
				n, err := f.ReadAt(buf, offset)
				if n > 0 {
					offset += int64(n)
					carry = append(carry, buf[:n]...)
					for {
						i := bytes.IndexByte(carry, '\n')
						if i < 0 {
							break
						}
						line := append([]byte(nil), carry[:i]...)
						carry = carry[i+1:]
						if len(line) > p.opts.MaxLine {
							p.Stats.Received.Add(1)
							p.Stats.Malformed.Add(1)
							continue
						}
						// A file can wait: back-pressure instead of drops.
						if len(line) > 0 && p.Put(ctx, device, line) != nil {
							return nil
						}
					}
					if len(carry) > p.opts.MaxLine {
						carry = nil // an endless line: it will be counted when its newline comes
					}
				}
				if err != nil && !errors.Is(err, io.EOF) {
					return err
				}
				if n == 0 {
					break
				}
			}
		}
		if reply != nil {
			close(reply)
			reply = nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(poll):
		case reply = <-p.catchUp:
		}
	}
}

func inode(st os.FileInfo) uint64 {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return s.Ino
	}
	return 0
}
