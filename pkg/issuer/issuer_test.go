package issuer

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		want      Outcome
		wantAfter time.Duration
	}{
		{"pending waits for its retry-after", &PendingError{Err: errors.New("queued"), RetryAfter: time.Minute}, Wait, time.Minute},
		{"pending without a delay waits the default", &PendingError{Err: errors.New("queued")}, Wait, defaultPendingDelay},
		{"a wrapped permanent error fails", fmt.Errorf("signing: %w", Permanentf("bad key")), Fail, 0},
		{"not ready waits for the issuer", &NotReadyError{Reason: "CAExpired", Message: "expired"}, WaitForIssuer, 0},
		{"anything else is retried", errors.New("connection refused"), Retry, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, after := Classify(tt.err)
			if got != tt.want || after != tt.wantAfter {
				t.Errorf("Classify = %v, %s; want %v, %s", got, after, tt.want, tt.wantAfter)
			}
		})
	}
}
