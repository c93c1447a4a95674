package kubectlcertmint

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"sigs.k8s.io/yaml"
)

// writeReport writes r as format: table, json or yaml. JSON and YAML have
// the report's fields, for scripts; the table is for people.
func writeReport(w io.Writer, format string, r report) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	case "yaml":
		data, err := yaml.Marshal(r)
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	}
	t := newTextWriter(w)
	r.writeTable(t)
	return t.done()
}

// textWriter writes rows of tab-separated cells, aligned in columns up to
// the next line without a tab, and lines of text. It keeps the first write
// error for done.
type textWriter struct {
	tw  *tabwriter.Writer
	err error
}

func newTextWriter(w io.Writer) *textWriter {
	return &textWriter{tw: tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)}
}

// row writes one row of the current table.
func (t *textWriter) row(cells ...string) {
	t.printf("%s\n", strings.Join(cells, "\t"))
}

func (t *textWriter) printf(format string, args ...any) {
	if t.err == nil {
		_, t.err = fmt.Fprintf(t.tw, format, args...)
	}
}

// done flushes what was written and returns the first error.
func (t *textWriter) done() error {
	if t.err != nil {
		return t.err
	}
	return t.tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
