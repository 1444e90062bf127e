package agent

import (
	"slices"
	"testing"
	"time"
)

func TestCollectable(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	list := []ImageInfo{
		{Name: "in-use", InUse: true, CreatedAt: ago(time.Hour), UpdatedAt: ago(time.Hour)},
		{Name: "kept", CreatedAt: ago(time.Hour), UpdatedAt: ago(time.Hour)},
		{Name: "fresh", CreatedAt: ago(time.Minute), UpdatedAt: ago(time.Minute)},
		{Name: "old", CreatedAt: ago(3 * time.Hour), UpdatedAt: ago(3 * time.Hour)},
		{Name: "older", CreatedAt: ago(5 * time.Hour), UpdatedAt: ago(5 * time.Hour)},
		{Name: "touched", CreatedAt: ago(9 * time.Hour), UpdatedAt: ago(2 * time.Hour)},
	}
	var got []string
	for _, im := range collectable(list, func(n string) bool { return n == "kept" }, now) {
		got = append(got, im.Name)
	}
	if want := []string{"older", "old", "touched"}; !slices.Equal(got, want) {
		t.Errorf("collectable = %v, want %v (oldest first; never in use, kept or fresh)", got, want)
	}
}

func TestImageBudget(t *testing.T) {
	t.Setenv("AMBER_IMAGE_BUDGET_MB", "")
	if ImageBudget() != DefaultImageBudget {
		t.Errorf("default budget %d", ImageBudget())
	}
	t.Setenv("AMBER_IMAGE_BUDGET_MB", "512")
	if ImageBudget() != 512<<20 {
		t.Errorf("budget %d, want 512 MiB", ImageBudget())
	}
}
