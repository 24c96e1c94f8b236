package audit

import (
	"context"
	"errors"
	"log/slog"
)

// Appender stores audit records; *store.Store implements it.
type Appender interface {
	AppendAudit(ctx context.Context, e Entry) (Record, error)
}

// Append appends e through a even if ctx is canceled (a decision is
// recorded whatever happens to the caller's connection). An entry refused
// as invalid (ErrInvalid) is retried once without its free-text details. A
// failure is logged to log, without the entry's details, and returned.
func Append(ctx context.Context, a Appender, log *slog.Logger, e Entry) error {
	ctx = context.WithoutCancel(ctx)
	_, err := a.AppendAudit(ctx, e)
	if errors.Is(err, ErrInvalid) && len(e.Details) > 0 {
		e.Details = nil
		_, err = a.AppendAudit(ctx, e)
	}
	if err != nil {
		log.LogAttrs(ctx, slog.LevelError, "audit append failed",
			slog.String("operation", e.Operation), slog.String("request_id", e.RequestID),
			slog.String("caller", e.Caller), slog.String("error", err.Error()))
	}
	return err
}
