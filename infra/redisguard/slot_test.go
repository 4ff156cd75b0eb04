package redisguard

import (
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// crc16 is CRC-16/XMODEM (poly 0x1021, init 0), as in the Redis Cluster spec.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// keySlot is HASH_SLOT from the Redis Cluster spec: if the key has a '{'
// followed later by a '}' with at least one byte between them, only that
// substring is hashed.
func keySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key) % 16384)
}

func TestKeySlotMatchesSpec(t *testing.T) {
	if got := crc16("123456789"); got != 0x31C3 {
		t.Fatalf("crc16(123456789) = %#x, want 0x31c3", got)
	}
	for key, want := range map[string]int{
		"foo":                  12182, // CLUSTER KEYSLOT foo
		"bar":                  5061,
		"{user1000}.following": 3443,
		"{user1000}.followers": 3443,
		"foo{}{bar}":           8363, // empty tag: the whole key is hashed
		"foo{{bar}}zap":        4015, // tag is "{bar"
		"foo{bar}{zap}":        5061, // tag is "bar"
	} {
		if got := keySlot(key); got != want {
			t.Errorf("keySlot(%q) = %d, want %d", key, got, want)
		}
	}
}

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
					if keySlot(key) != keySlot(keys[0]) {
						t.Errorf("prefix %q batch %q script %s: %q in slot %d, %q in slot %d",
							prefix, id, name, keys[0], keySlot(keys[0]), key, keySlot(key))
					}
				}
			}
		}
	}
	if len(scripts) != 4 {
		t.Errorf("scripts = %d, want 4 (sync, reserve, confirm, release): update this test", len(scripts))
	}
}
