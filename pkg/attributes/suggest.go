package attributes

import (
	"fmt"
	"strings"
)

// maxSuggestDistance is the most edits a key may be away from a known
// attribute for the error to suggest it.
const maxSuggestDistance = 3

// suggest returns ` (did you mean "csi.certmint.io/x"?)` for the known
// attribute nearest to key, or "" when none is near. The prefix and the name
// after it are compared apart, so a typo in the prefix, a missing prefix and
// another driver's prefix all find the attribute of the same name.
func suggest(key string) string {
	name := key[strings.LastIndex(key, "/")+1:]
	best, bestDistance := "", maxSuggestDistance+1
	for k := range known {
		d := editDistance(name, strings.TrimPrefix(k, Prefix))
		if d < bestDistance || d == bestDistance && k < best {
			best, bestDistance = k, d
		}
	}
	if best == "" || len(name) <= bestDistance {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		// Attribute names are short; a long key is no typo of one.
		return maxSuggestDistance + 1
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
