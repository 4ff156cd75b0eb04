package commands

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/fnv"
	"io"
	"iter"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/couponsd/couponsd/domain"
)

// GrantUsers yields an uploaded list's user ids in order. A non-nil error
// (a malformed body) ends the upload with that error.
type GrantUsers = iter.Seq2[string, error]

// CreateGrantJob asks for one coupon of BatchID for every user of Users.
// JobID comes from the HTTP layer (derived from the Idempotency-Key when
// there is one).
type CreateGrantJob struct {
	JobID   string
	BatchID string
	By      string
	Users   GrantUsers
}

// GrantUploadConfig tunes how an uploaded list is split.
type GrantUploadConfig struct {
	// TempDir holds the upload's temporary bucket files (default: the OS's).
	TempDir string
	// ShardSize is the number of distinct users per shard (default 1000).
	ShardSize int
	// Buckets is the number of temporary files the list is hashed into; a
	// bucket is sorted in memory, so memory use is about the list's size
	// divided by Buckets (default 64). Changing it changes how a list is
	// split: keep it while uploads may be retried.
	Buckets int
	// WriteWindow bounds the shard appends in flight (default 16).
	WriteWindow int
}

// WithDefaults fills zero fields.
func (c GrantUploadConfig) WithDefaults() GrantUploadConfig {
	if c.TempDir == "" {
		c.TempDir = os.TempDir()
	}
	if c.ShardSize <= 0 {
		c.ShardSize = domain.DefaultGrantShardSize
	}
	if c.Buckets <= 0 {
		c.Buckets = 64
	}
	if c.WriteWindow <= 0 {
		c.WriteWindow = 16
	}
	return c
}

// Validate checks the bounds.
func (c GrantUploadConfig) Validate() error {
	c = c.WithDefaults()
	if c.ShardSize > domain.MaxGrantShardSize {
		return fmt.Errorf("commands: grant shard size %d is over %d", c.ShardSize, domain.MaxGrantShardSize)
	}
	if c.Buckets > 4096 {
		return fmt.Errorf("commands: %d grant upload buckets is over 4096", c.Buckets)
	}
	return nil
}

// CreateGrantJobHandler handles CreateGrantJob.
type CreateGrantJobHandler struct {
	d   Deps
	cfg GrantUploadConfig
}

// NewCreateGrantJobHandler fails fast on missing dependencies or a bad config.
func NewCreateGrantJobHandler(d Deps, cfg GrantUploadConfig) (*CreateGrantJobHandler, error) {
	if err := d.validate("CreateGrantJobHandler"); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &CreateGrantJobHandler{d: d, cfg: cfg.WithDefaults()}, nil
}

// Handle reads the whole list, never holding it in memory: each id is
// validated and hashed into a temporary bucket file; then every bucket is
// sorted, its duplicates counted (they are skipped), and its distinct users
// cut into shards. Only then, with the whole list known good, is anything
// written: the shards (grantshard.listed.v1, NoStream), then
// grantjob.created.v2. A bad id or a malformed body writes nothing.
//
// A repeat with the same job id, batch and list returns the stored job with
// Changed false (the list is read again to compare its fingerprint); the
// same job id with another list is a conflict. A repeat after a crash
// between the shards and the job finds its shards identical and completes.
func (h *CreateGrantJobHandler) Handle(ctx context.Context, cmd CreateGrantJob) (Result[*domain.GrantJob], error) {
	var none Result[*domain.GrantJob]
	if err := domain.ValidateID("job_id", cmd.JobID); err != nil {
		return none, err
	}
	if err := domain.ValidateID("batch_id", cmd.BatchID); err != nil {
		return none, err
	}
	if cmd.Users == nil {
		return none, domain.Invalid("user_ids", "are required")
	}
	existing, err := loadGrantJob(ctx, h.d.Repo, cmd.JobID)
	if err != nil {
		return none, err
	}
	if existing.Exists() {
		// A repeat: read the list for its fingerprint only.
		sum, total, err := fingerprint(ctx, cmd.Users)
		if err != nil {
			return none, err
		}
		return h.repeat(existing, cmd.BatchID, domain.GrantList{Total: total, SHA256: sum})
	}
	b, err := h.d.Repo.LoadBatch(ctx, cmd.BatchID)
	if err != nil {
		return none, err
	}
	if err := domain.CheckGrantable(b, h.d.Clock.Now()); err != nil {
		return none, err // before reading a list that could not be granted
	}
	sp, err := newGrantSpool(h.cfg)
	if err != nil {
		return none, err
	}
	defer sp.cleanup()
	if err := sp.read(ctx, cmd.Users); err != nil {
		return none, err
	}
	list, err := sp.split()
	if err != nil {
		return none, err
	}
	if err := domain.CheckGrantList(list); err != nil {
		return none, err
	}
	now := h.d.Clock.Now()
	// Validate the job before writing its shards.
	j, err := domain.CreateGrantJob(cmd.JobID, b, list, cmd.By, now)
	if err != nil {
		return none, err
	}
	if err := h.writeShards(ctx, cmd.JobID, cmd.BatchID, sp, now); err != nil {
		return none, err
	}
	pos, err := saveGrantJob(ctx, h.d.Repo, j)
	if errors.Is(err, domain.ErrConcurrency) {
		stored, lerr := loadGrantJob(ctx, h.d.Repo, cmd.JobID)
		if lerr != nil {
			return none, lerr
		}
		return h.repeat(stored, cmd.BatchID, list)
	}
	if err != nil {
		return none, err
	}
	return Result[*domain.GrantJob]{Aggregate: j, Position: pos, Changed: true}, nil
}

func (h *CreateGrantJobHandler) repeat(j *domain.GrantJob, batchID string, list domain.GrantList) (Result[*domain.GrantJob], error) {
	if !j.SameRequest(batchID, list) {
		return Result[*domain.GrantJob]{}, domain.Errorf(domain.ErrConflict, "grant job %s already exists with another batch or user list", j.ID)
	}
	return Result[*domain.GrantJob]{Aggregate: j}, nil
}

// writeShards appends every shard, WriteWindow at once. A shard stored
// already (a retried upload after a crash) must hold the same users.
func (h *CreateGrantJobHandler) writeShards(ctx context.Context, jobID, batchID string, sp *grantSpool, now time.Time) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, h.cfg.WriteWindow)
	var wg sync.WaitGroup
	err := sp.shards(func(n int, users []string) error {
		if err := context.Cause(ctx); err != nil {
			return err
		}
		s, err := domain.ListGrantShard(jobID, batchID, n, users, now)
		if err != nil {
			return err
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := h.writeShard(ctx, s); err != nil {
				cancel(err)
			}
		}()
		return nil
	})
	wg.Wait()
	if err != nil {
		return err
	}
	return context.Cause(ctx)
}

func (h *CreateGrantJobHandler) writeShard(ctx context.Context, s *domain.GrantShard) error {
	err := saveGrantShard(ctx, h.d.Repo, s)
	if !errors.Is(err, domain.ErrConcurrency) {
		return err
	}
	stored, err := loadGrantShard(ctx, h.d.Repo, s.JobID, s.Shard)
	if err != nil {
		return err
	}
	if stored.BatchID != s.BatchID || !slices.Equal(stored.UserIDs, s.UserIDs) {
		return domain.Errorf(domain.ErrConflict, "grant job %s: shard %d is stored with another list", s.JobID, s.Shard)
	}
	return nil
}

// fingerprint reads a list for its SHA-256 and length, validating each id.
func fingerprint(ctx context.Context, users GrantUsers) (string, int, error) {
	h := sha256.New()
	n := 0
	for u, err := range users {
		if err != nil {
			return "", 0, err
		}
		if err := checkListed(ctx, n, u); err != nil {
			return "", 0, err
		}
		writeListed(h, u)
		n++
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

func writeListed(h hash.Hash, u string) {
	_, _ = io.WriteString(h, u)
	_, _ = h.Write([]byte{'\n'})
}

// checkListed validates entry i of a list (and stops on a cancelled upload
// every 64k entries).
func checkListed(ctx context.Context, i int, u string) error {
	if i%65536 == 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	if i >= domain.MaxGrantJobEntries {
		return domain.Invalid("user_ids", "must hold at most %d user ids", domain.MaxGrantJobEntries)
	}
	return domain.ValidateID(fmt.Sprintf("user_ids[%d]", i), u)
}

// grantSpool is an upload on its way into shards: the ids hashed into
// bucket files, so one bucket at a time is sorted in memory.
type grantSpool struct {
	cfg     GrantUploadConfig
	dir     string
	files   []*os.File
	writers []*bufio.Writer
	sum     hash.Hash
	total   int
}

func newGrantSpool(cfg GrantUploadConfig) (*grantSpool, error) {
	dir, err := os.MkdirTemp(cfg.TempDir, "couponsd-grant-*")
	if err != nil {
		return nil, fmt.Errorf("grant upload: %w", err)
	}
	sp := &grantSpool{cfg: cfg, dir: dir, sum: sha256.New()}
	for i := range cfg.Buckets {
		f, err := os.Create(fmt.Sprintf("%s/%04d", dir, i))
		if err != nil {
			sp.cleanup()
			return nil, fmt.Errorf("grant upload: %w", err)
		}
		sp.files = append(sp.files, f)
		sp.writers = append(sp.writers, bufio.NewWriterSize(f, 32<<10))
	}
	return sp, nil
}

func (sp *grantSpool) cleanup() {
	for _, f := range sp.files {
		_ = f.Close()
	}
	_ = os.RemoveAll(sp.dir)
}

func (sp *grantSpool) bucketOf(u string) int {
	h := fnv.New64a()
	_, _ = io.WriteString(h, u)
	return int(h.Sum64() % uint64(len(sp.writers)))
}

// read spools the whole list.
func (sp *grantSpool) read(ctx context.Context, users GrantUsers) error {
	for u, err := range users {
		if err != nil {
			return err
		}
		if err := checkListed(ctx, sp.total, u); err != nil {
			return err
		}
		writeListed(sp.sum, u)
		w := sp.writers[sp.bucketOf(u)]
		if _, err := w.WriteString(u); err != nil {
			return fmt.Errorf("grant upload: %w", err)
		}
		if err := w.WriteByte('\n'); err != nil {
			return fmt.Errorf("grant upload: %w", err)
		}
		sp.total++
	}
	for _, w := range sp.writers {
		if err := w.Flush(); err != nil {
			return fmt.Errorf("grant upload: %w", err)
		}
	}
	return ctx.Err()
}

// split sorts and de-duplicates every bucket in place and describes the list.
func (sp *grantSpool) split() (domain.GrantList, error) {
	list := domain.GrantList{Total: sp.total, ShardSize: sp.cfg.ShardSize, SHA256: hex.EncodeToString(sp.sum.Sum(nil))}
	for i := range sp.files {
		users, err := sp.readBucket(i)
		if err != nil {
			return list, err
		}
		slices.Sort(users)
		distinct := slices.Compact(users)
		list.Duplicates += len(users) - len(distinct)
		list.Shards += (len(distinct) + sp.cfg.ShardSize - 1) / sp.cfg.ShardSize
		if err := sp.rewriteBucket(i, distinct); err != nil {
			return list, err
		}
	}
	return list, nil
}

func (sp *grantSpool) readBucket(i int) ([]string, error) {
	f := sp.files[i]
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("grant upload: %w", err)
	}
	var users []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		users = append(users, sc.Text())
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("grant upload: %w", err)
	}
	return users, nil
}

func (sp *grantSpool) rewriteBucket(i int, users []string) error {
	f := sp.files[i]
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("grant upload: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("grant upload: %w", err)
	}
	w := bufio.NewWriterSize(f, 32<<10)
	for _, u := range users {
		_, _ = w.WriteString(u)
		_ = w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("grant upload: %w", err)
	}
	return nil
}

// shards calls fn for every shard, numbered from 0 in bucket order: each
// bucket's sorted distinct users cut into ShardSize pieces.
func (sp *grantSpool) shards(fn func(n int, users []string) error) error {
	n := 0
	for i := range sp.files {
		users, err := sp.readBucket(i)
		if err != nil {
			return err
		}
		for len(users) > 0 {
			k := min(sp.cfg.ShardSize, len(users))
			if err := fn(n, users[:k:k]); err != nil {
				return err
			}
			users = users[k:]
			n++
		}
	}
	return nil
}
