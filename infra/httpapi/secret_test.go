package httpapi

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

func TestLoadOrCreateSecret(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	k1, err := LoadOrCreateSecret(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(k1) != 32 {
		t.Fatalf("key of %d bytes", len(k1))
	}
	fi, err := os.Stat(filepath.Join(dir, SecretFileName))
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	k2, err := LoadOrCreateSecret(dir)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("reload = %x, %v; want the same key", k2, err)
	}
	// Tokens signed with it verify with it.
	if _, err := IssueToken(k1, "u", RoleUser, 60e9, t0); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
}

func TestLoadOrCreateSecretConcurrent(t *testing.T) {
	dir := t.TempDir()
	keys := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			k, err := LoadOrCreateSecret(dir)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		})
	}
	wg.Wait()
	for _, k := range keys {
		if !bytes.Equal(k, keys[0]) {
			t.Fatal("concurrent first uses got different keys")
		}
	}
}

func TestLoadOrCreateSecretRefusesBadFiles(t *testing.T) {
	if _, err := LoadOrCreateSecret(""); err == nil {
		t.Error("empty dir accepted")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, SecretFileName)
	if err := os.WriteFile(path, []byte("not hex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateSecret(dir); err == nil {
		t.Error("corrupt secret accepted")
	}
	if err := os.WriteFile(path, []byte("abcd\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateSecret(dir); err == nil {
		t.Error("short secret accepted")
	}
	if runtime.GOOS != "windows" {
		if err := os.WriteFile(path, bytes.Repeat([]byte("ab"), 32), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadOrCreateSecret(dir); err == nil {
			t.Error("world-readable secret accepted")
		}
	}
}

func TestCreateSecretExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), SecretFileName)
	key := bytes.Repeat([]byte{7}, 32)
	got, err := createSecretExcl(path, key)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("create = %x, %v", got, err)
	}
	// A second creator reads the first key.
	got, err = createSecretExcl(path, bytes.Repeat([]byte{9}, 32))
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("second create = %x, %v; want the first key", got, err)
	}
}
