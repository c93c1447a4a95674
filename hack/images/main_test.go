package main

import (
	"testing"
	"time"
)

func TestCreationTime(t *testing.T) {
	commit := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name            string
		sourceDateEpoch string
		commit          time.Time
		want            time.Time
		wantErr         bool
	}{
		{name: "SOURCE_DATE_EPOCH unset dates the images at the commit", commit: commit, want: commit},
		{name: "SOURCE_DATE_EPOCH wins over the commit", sourceDateEpoch: "1700000000", commit: commit, want: time.Unix(1700000000, 0)},
		{name: "outside a checkout and without SOURCE_DATE_EPOCH the time is left to the build", want: time.Time{}},
		{name: "a SOURCE_DATE_EPOCH that is no number is refused", sourceDateEpoch: "2025-01-02", commit: commit, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := creationTime(tc.sourceDateEpoch, tc.commit)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error = %v, want error: %t", err, tc.wantErr)
			}
			if !got.Equal(tc.want) {
				t.Errorf("creation time = %s, want %s", got, tc.want)
			}
		})
	}
}
