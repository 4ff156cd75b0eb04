// Package e2e holds end-to-end tests of the read side: the pipeline, the
// projectors on their real adapters, replay and verify.
package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Snapshot dumps every key under prefix (minus the prefix and any key
// matching skip) as a canonical string per key.
func Snapshot(ctx context.Context, rdb redis.UniversalClient, prefix string, skip func(string) bool) (map[string]string, error) {
	out := map[string]string{}
	var cursor uint64
	for {
		keys, next, err := rdb.Scan(ctx, cursor, prefix+"*", 1000).Result()
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			name := strings.TrimPrefix(k, prefix)
			if skip != nil && skip(name) {
				continue
			}
			typ, err := rdb.Type(ctx, k).Result()
			if err != nil {
				return nil, err
			}
			var v string
			switch typ {
			case "string":
				v, err = rdb.Get(ctx, k).Result()
			case "hash":
				var m map[string]string
				m, err = rdb.HGetAll(ctx, k).Result()
				v = canonical(m)
			case "zset":
				var zs []redis.Z
				zs, err = rdb.ZRangeWithScores(ctx, k, 0, -1).Result()
				m := map[string]string{}
				for _, z := range zs {
					m[z.Member.(string)] = fmt.Sprint(z.Score)
				}
				v = canonical(m)
			case "set":
				var ms []string
				ms, err = rdb.SMembers(ctx, k).Result()
				sort.Strings(ms)
				v = strings.Join(ms, ",")
			default:
				v = "type:" + typ
			}
			if err != nil {
				return nil, err
			}
			out[name] = v
		}
		if cursor = next; cursor == 0 {
			return out, nil
		}
	}
}

func canonical(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(m[k])
		b.WriteByte(';')
	}
	return b.String()
}

// Diff lists the keys whose values differ (at most max lines).
func Diff(a, b map[string]string, max int) []string {
	var out []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			out = append(out, "only in first: "+k)
		} else if v != w {
			out = append(out, fmt.Sprintf("differs: %s\n  %.300s\n  %.300s", k, v, w))
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, "only in second: "+k)
		}
	}
	sort.Strings(out)
	if len(out) > max {
		out = append(out[:max], fmt.Sprintf("... and %d more", len(out)-max))
	}
	return out
}
