package redisguard

import (
	"github.com/couponsd/couponsd/infra/redistest"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestScriptKeysShareSlot checks that each script is called with keys of a
// single slot, whatever the batch id, and that the per-batch key set (used by
// Rebuild's MULTI and DEL) does too. The global keys are never script keys.
func TestScriptKeysShareSlot(t *testing.T) {
	ids := []string{"b1", "batch-2024-black-friday", "weird}id", "{x}", "a{b}c", "ünïcode", "x:y:z", strings.Repeat("z", 128)}
	for _, prefix := range []string{"couponsd:", "test:abc:", "p"} {
		rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:0"})
		defer rdb.Close()
		g, err := New(rdb, prefix)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			k := g.Keys(id)
			sets := map[string][]string{"batch keys": k.All()}
			for _, s := range scripts {
				sets[s.name] = s.keys(k)
			}
			for name, keys := range sets {
				if len(keys) == 0 {
					t.Errorf("%s: no keys", name)
					continue
				}
				for _, key := range keys {
					if key == g.BatchesKey() || key == g.InitializedKey() {
						t.Errorf("%s uses a global key %q", name, key)
					}
					if !strings.HasPrefix(key, prefix) {
						t.Errorf("%s: key %q lacks prefix %q", name, key, prefix)
					}
					if redistest.KeySlot(key) != redistest.KeySlot(keys[0]) {
						t.Errorf("prefix %q batch %q script %s: %q in slot %d, %q in slot %d",
							prefix, id, name, keys[0], redistest.KeySlot(keys[0]), key, redistest.KeySlot(key))
					}
				}
			}
		}
	}
	if len(scripts) != 6 {
		t.Errorf("scripts = %d, want 6 (sync, reserve, confirm, release, reserve-grants, confirm-many): update this test", len(scripts))
	}
}
