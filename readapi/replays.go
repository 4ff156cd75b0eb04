package readapi

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
	"github.com/couponsd/couponsd/projections"
)

// ReplayTarget is one projection that can be replayed: its live projector
// (as written to by the pipeline), the gate it runs under, and whether it
// can be rebuilt into a fresh generation.
type ReplayTarget struct {
	Projector projections.Projector
	Gate      *projections.Gate
}

// ReplayStatus is a replay's progress.
type ReplayStatus struct {
	ID           string    `json:"id"`
	Projection   string    `json:"projection"`
	Mode         string    `json:"mode"` // rebuild (fresh generation) or reapply (from a position)
	State        string    `json:"state"`
	Done         uint64    `json:"done"`
	Position     uint64    `json:"position"`
	Head         uint64    `json:"head"`
	EventsPerSec float64   `json:"events_per_sec"`
	ETASeconds   float64   `json:"eta_seconds"`
	Started      time.Time `json:"started"`
	Finished     time.Time `json:"finished,omitzero"`
	Error        string    `json:"error,omitempty"`
}

// Replays runs projection replays in the background while serving goes on.
type Replays struct {
	store   es.Store
	targets map[string]ReplayTarget
	newID   func() string
	mu      sync.Mutex
	runs    map[string]*ReplayStatus
	active  map[string]bool
}

// NewReplays fails fast on missing dependencies.
func NewReplays(store es.Store, targets map[string]ReplayTarget, newID func() string) (*Replays, error) {
	if store == nil || len(targets) == 0 || newID == nil {
		return nil, errors.New("readapi: NewReplays needs a store, targets and an id generator")
	}
	return &Replays{store: store, targets: targets, newID: newID, runs: map[string]*ReplayStatus{}, active: map[string]bool{}}, nil
}

// Names lists the replayable projections.
func (r *Replays) Names() []string {
	out := make([]string, 0, len(r.targets))
	for n := range r.targets {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Start launches a replay of projection: a rebuild into a fresh generation
// when from is nil (the projection must support it), else a re-application
// of the events after *from through the live projector.
func (r *Replays) Start(projection string, from *uint64) (ReplayStatus, error) {
	t, ok := r.targets[projection]
	if !ok {
		return ReplayStatus{}, domain.Invalid("projection", "unknown projection %q (known: %v)", projection, r.Names())
	}
	mode := "reapply"
	if from == nil {
		if _, ok := t.Projector.(projections.Rebuildable); !ok {
			return ReplayStatus{}, domain.Invalid("from", "projection %s cannot be rebuilt into a fresh generation: give from to re-apply", projection)
		}
		mode = "rebuild"
	}
	r.mu.Lock()
	if r.active[projection] {
		r.mu.Unlock()
		return ReplayStatus{}, domain.Errorf(domain.ErrConflict, "a replay of %s is already running", projection)
	}
	r.active[projection] = true
	st := &ReplayStatus{ID: r.newID(), Projection: projection, Mode: mode, State: "running", Started: time.Now().UTC()}
	r.runs[st.ID] = st
	first := *st
	r.mu.Unlock()

	report := func(p projections.ReplayProgress) {
		r.mu.Lock()
		defer r.mu.Unlock()
		st.Done, st.Position, st.Head = p.Done, p.Position, p.Head
		if secs := time.Since(p.Started).Seconds(); secs > 0 {
			st.EventsPerSec = float64(p.Done) / secs
			st.ETASeconds = 0
			if st.EventsPerSec > 0 && p.Head > p.Position {
				// Embedded positions are dense (one per event); on EventStoreDB
				// this over-estimates, which an ETA may.
				st.ETASeconds = float64(p.Head-p.Position) / st.EventsPerSec
			}
		}
	}
	go func() {
		ctx := context.Background()
		var err error
		if from == nil {
			err = projections.Rebuild(ctx, r.store, t.Projector.(projections.Rebuildable), t.Gate, report)
		} else {
			err = projections.Reapply(ctx, r.store, t.Projector, t.Gate, *from, report)
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		st.Finished, st.State, st.ETASeconds = time.Now().UTC(), "finished", 0
		if err != nil {
			st.State, st.Error = "failed", err.Error()
		}
		delete(r.active, projection)
	}()
	return first, nil
}

// Status returns a replay's progress.
func (r *Replays) Status(id string) (ReplayStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.runs[id]
	if !ok {
		return ReplayStatus{}, domain.Errorf(domain.ErrNotFound, "replay %s not found", id)
	}
	return *st, nil
}

// String renders a one-line progress summary.
func (s ReplayStatus) String() string {
	return fmt.Sprintf("%s %s: %d events, position %d/%d, %.0f ev/s, eta %.0fs", s.Projection, s.State, s.Done, s.Position, s.Head, s.EventsPerSec, s.ETASeconds)
}
