package request

import (
	"encoding/asn1"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/util/validation"
)

// ValidatePodReference checks a pod's namespace, name and UID the way the
// API server checks them, so that a request naming a pod that cannot exist
// is refused at once rather than looked up. The UID goes into a label, so it
// must be a valid label value too.
func ValidatePodReference(namespace, name, uid string) error {
	var problems []string
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		problems = append(problems, fmt.Sprintf("namespace %s: %s", Quote(namespace), strings.Join(errs, ", ")))
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		problems = append(problems, fmt.Sprintf("pod name %s: %s", Quote(name), strings.Join(errs, ", ")))
	}
	switch errs := validation.IsValidLabelValue(uid); {
	case uid == "":
		problems = append(problems, "pod UID is empty")
	case len(errs) > 0:
		problems = append(problems, fmt.Sprintf("pod UID %s: %s", Quote(uid), strings.Join(errs, ", ")))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// ValidateServiceAccountName checks a ServiceAccount name as the API server
// does.
func ValidateServiceAccountName(name string) error {
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("ServiceAccount name %s: %s", Quote(name), strings.Join(errs, ", "))
	}
	return nil
}

// MaxQuoted is the most of a value that error messages and log lines quote:
// values come from pod specs and requests, and a 70,000-character one must
// not make a 70,000-character Event.
const MaxQuoted = 128

// Quote quotes s like %q, cut to MaxQuoted bytes with a note of how much was
// left out.
func Quote(s string) string {
	if len(s) <= MaxQuoted {
		return strconv.Quote(s)
	}
	cut := MaxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes in all)", strconv.Quote(s[:cut]), len(s))
}

// QuoteAll quotes each of values with Quote, comma-separated, and lists at
// most a few of them.
func QuoteAll(values []string) string {
	const most = 8
	quoted := make([]string, 0, min(len(values), most))
	for i, v := range values {
		if i == most {
			return strings.Join(quoted, ", ") + fmt.Sprintf(" and %d more", len(values)-most)
		}
		quoted = append(quoted, Quote(v))
	}
	return strings.Join(quoted, ", ")
}

// Upper bounds on a certificate subject. RFC 5280 (Appendix A) and X.520
// bound the attributes in characters; a subject may repeat attributes (O,
// OU), so their number is bounded too.
const (
	// MaxSubjectAttributes is the most attributes a subject may have.
	MaxSubjectAttributes = 32
	// maxOtherAttribute bounds attributes the table below does not name.
	maxOtherAttribute = 128
)

// SubjectAttribute names an attribute type of a subject and its bound.
type SubjectAttribute struct {
	Name   string
	OID    asn1.ObjectIdentifier
	MaxLen int
}

// SubjectAttributes are the attributes the driver's subject attributes set,
// with their upper bounds.
var SubjectAttributes = []SubjectAttribute{
	{"common name", asn1.ObjectIdentifier{2, 5, 4, 3}, 64},
	{"serial number", asn1.ObjectIdentifier{2, 5, 4, 5}, 64},
	{"country", asn1.ObjectIdentifier{2, 5, 4, 6}, 2},
	{"locality", asn1.ObjectIdentifier{2, 5, 4, 7}, 128},
	{"province", asn1.ObjectIdentifier{2, 5, 4, 8}, 128},
	{"street address", asn1.ObjectIdentifier{2, 5, 4, 9}, 128},
	{"organization", asn1.ObjectIdentifier{2, 5, 4, 10}, 64},
	{"organizational unit", asn1.ObjectIdentifier{2, 5, 4, 11}, 64},
	{"postal code", asn1.ObjectIdentifier{2, 5, 4, 17}, 40},
}

// CheckSubjectValue checks one attribute value of a subject against its
// bound.
func CheckSubjectValue(oid asn1.ObjectIdentifier, value string) error {
	name, limit := oid.String(), maxOtherAttribute
	for _, a := range SubjectAttributes {
		if a.OID.Equal(oid) {
			name, limit = a.Name, a.MaxLen
			break
		}
	}
	if n := utf8.RuneCountInString(value); n > limit {
		return fmt.Errorf("%s %s is %d characters long; at most %d are allowed", name, Quote(value), n, limit)
	}
	return nil
}
