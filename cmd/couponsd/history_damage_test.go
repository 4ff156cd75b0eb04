package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestDamagedHistoryIndexIsRebuilt: the embedded history index is written
// without fsync; a file damaged by an OS crash is moved aside at start-up
// and the index is rebuilt from the event store.
func TestDamagedHistoryIndexIsRebuilt(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dataDir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dataDir, "history"), 0o755); err != nil {
		t.Fatal(err)
	}
	garbage := make([]byte, 64<<10)
	for i := range garbage {
		garbage[i] = byte(i * 7)
	}
	if err := os.WriteFile(filepath.Join(dataDir, "history", "history.db"), garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	svc := &service{t: t, bin: buildBinary(t), addr: addr, env: []string{
		"COUPONS_ADDR=" + addr, "COUPONS_DATA_DIR=" + dataDir, "COUPONS_JWT_SECRET=" + testSecret, "COUPONS_LOG_LEVEL=warn",
	}}
	svc.start()
	defer svc.stop()
	code, body, err := call("GET", "http://"+addr+"/v1/me/coupons?status=used", tok(t, "ann", "user"), "", nil)
	if err != nil || code != 200 {
		t.Fatalf("used listing on the fresh index: %d %v %v", code, body, err)
	}
	aside, _ := filepath.Glob(filepath.Join(dataDir, "history.damaged-*"))
	if len(aside) != 1 {
		t.Fatalf("damaged index not moved aside: %v", aside)
	}
}
