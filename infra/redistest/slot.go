package redistest

import "strings"

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

// KeySlot is HASH_SLOT of the Redis Cluster spec: when the key has a '{'
// followed later by a '}' with at least one byte between them, only that
// substring is hashed. Tests use it to check that multi-key commands stay in
// one slot, which miniredis does not enforce.
func KeySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key) % 16384)
}
