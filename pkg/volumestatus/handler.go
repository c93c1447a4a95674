package volumestatus

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/certmint/certmint/pkg/manager"
)

// filters are the query parameters of /volumes; each narrows the list to
// the volumes whose field equals its value.
var filters = map[string]func(manager.Volume) string{
	"namespace": func(v manager.Volume) string { return v.Pod.Namespace },
	"pod":       func(v manager.Volume) string { return v.Pod.Name },
}

// ServeHTTP answers GET /volumes[?namespace=&pod=] with a List as JSON. An
// unknown parameter is refused rather than ignored, so a misspelt filter
// does not return every volume.
func (r *Reporter) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	query := req.URL.Query()
	var unknown []string
	for key := range query {
		if filters[key] == nil {
			unknown = append(unknown, key)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		http.Error(w, fmt.Sprintf("unknown query parameters %s; /volumes takes namespace and pod", strings.Join(unknown, ", ")), http.StatusBadRequest)
		return
	}
	list := r.list(func(v manager.Volume) bool {
		for key, field := range filters {
			if query.Has(key) && field(v) != query.Get(key) {
				return false
			}
		}
		return true
	})
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	// The status is sent once the first byte is: a failure here is the
	// client's going away, nothing to answer.
	_ = enc.Encode(list)
}
