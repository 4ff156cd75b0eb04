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
