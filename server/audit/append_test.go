package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// refusingAppender refuses entries with details as invalid and, if fail is
// set, every entry.
type refusingAppender struct {
	fail  error
	calls []Entry
}

func (a *refusingAppender) AppendAudit(ctx context.Context, e Entry) (Record, error) {
	if ctx.Err() != nil {
		return Record{}, ctx.Err()
	}
	a.calls = append(a.calls, e)
	switch {
	case a.fail != nil:
		return Record{}, a.fail
	case len(e.Details) > 0:
		return Record{}, fmt.Errorf("%w: detail too long", ErrInvalid)
	}
	return Record{}, nil
}

func TestAppend(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	e := Entry{RequestID: "r1", Operation: "ReleaseKey", Details: map[string]string{"secretish": "value-not-to-log"}}

	// Canceled caller, invalid details: appended anyway, without details.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	a := &refusingAppender{}
	if err := Append(ctx, a, log, e); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if len(a.calls) != 2 || a.calls[1].Details != nil || a.calls[1].RequestID != "r1" {
		t.Fatalf("calls %+v, want a retry without details", a.calls)
	}
	if logs.Len() != 0 {
		t.Errorf("logged on success: %s", logs.String())
	}

	// A store failure is returned and logged, without the details.
	boom := errors.New("disk full")
	a = &refusingAppender{fail: boom}
	if err := Append(context.Background(), a, log, e); !errors.Is(err, boom) || len(a.calls) != 1 {
		t.Fatalf("Append = %v after %d calls, want %v after 1", err, len(a.calls), boom)
	}
	if out := logs.String(); !strings.Contains(out, "audit append failed") || !strings.Contains(out, "r1") || strings.Contains(out, "value-not-to-log") {
		t.Errorf("log %q: want the failure with the request id and without details", out)
	}
}
