package readapi

import "sort"

// sortClaimable orders by claim end (soonest first), then id.
func sortClaimable(bs []ClaimableBatch) {
	sort.Slice(bs, func(i, j int) bool {
		a, b := bs[i].Rules.ClaimEndsAt, bs[j].Rules.ClaimEndsAt
		if !a.Equal(b) {
			return a.Before(b)
		}
		return bs[i].ID < bs[j].ID
	})
}

func sortBy[T any](s []T, less func(a, b T) bool) {
	sort.SliceStable(s, func(i, j int) bool { return less(s[i], s[j]) })
}
