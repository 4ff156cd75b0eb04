// Package testkit holds small test doubles shared by several packages'
// tests.
package testkit

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// MemCheckpoint is an in-memory projection checkpoint. A save that would
// move it back is an error; while FailSaves > 0 saves fail (and count down).
type MemCheckpoint struct {
	mu        sync.Mutex
	Pos       uint64
	FailSaves int
}

// Checkpoint returns the saved position.
func (m *MemCheckpoint) Checkpoint(context.Context) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.Pos, nil
}

// SaveCheckpoint saves pos.
func (m *MemCheckpoint) SaveCheckpoint(_ context.Context, pos uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.FailSaves > 0 {
		m.FailSaves--
		return errors.New("checkpoint store down")
	}
	if pos < m.Pos {
		return fmt.Errorf("checkpoint going back: %d < %d", pos, m.Pos)
	}
	m.Pos = pos
	return nil
}

// Get returns the saved position.
func (m *MemCheckpoint) Get() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.Pos
}

// FailNextSaves makes the next n saves fail.
func (m *MemCheckpoint) FailNextSaves(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.FailSaves = n
}
