package attributes

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/certmint/certmint/pkg/request"
)

// attributeTypes are the RFC 4514 short names accepted in a literal subject;
// any other type must be written as a dotted OID.
var attributeTypes = map[string]asn1.ObjectIdentifier{
	"CN":           {2, 5, 4, 3},
	"SERIALNUMBER": {2, 5, 4, 5},
	"C":            {2, 5, 4, 6},
	"L":            {2, 5, 4, 7},
	"ST":           {2, 5, 4, 8},
	"STREET":       {2, 5, 4, 9},
	"O":            {2, 5, 4, 10},
	"OU":           {2, 5, 4, 11},
	"POSTALCODE":   {2, 5, 4, 17},
	"UID":          {0, 9, 2342, 19200300, 100, 1, 1},
	"DC":           {0, 9, 2342, 19200300, 100, 1, 25},
}

var (
	oidCommonName         = attributeTypes["CN"]
	oidSerialNumber       = attributeTypes["SERIALNUMBER"]
	oidLocality           = attributeTypes["L"]
	oidProvince           = attributeTypes["ST"]
	oidStreetAddress      = attributeTypes["STREET"]
	oidOrganization       = attributeTypes["O"]
	oidOrganizationalUnit = attributeTypes["OU"]
	oidPostalCode         = attributeTypes["POSTALCODE"]
)

// errSeveralCommonNames is returned for a subject with more than one CN.
var errSeveralCommonNames = errors.New("more than one CN: a certificate has one common name; put further names in dns-names")

// ParseLiteralSubject parses an RFC 4514 distinguished name such as
// "CN=web,O=Example\, Inc.,C=DE". RFC 4514 writes the most specific RDN
// first, the reverse of the DER order, so the result is reversed. Values in
// hex-encoded BER ("#04...") are not accepted: nobody writes those by hand.
// More than one CN is refused: the controller would deny the request anyway,
// and this way the pod's author hears it when the volume is mounted.
func ParseLiteralSubject(s string) (pkix.RDNSequence, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("empty distinguished name")
	}
	var seq pkix.RDNSequence
	commonNames := 0
	for _, rdnText := range splitUnescaped(s, ',') {
		var rdn pkix.RelativeDistinguishedNameSET
		for _, avaText := range splitUnescaped(rdnText, '+') {
			typ, value, ok := strings.Cut(avaText, "=")
			if !ok {
				return nil, fmt.Errorf("%s is not TYPE=value", request.Quote(avaText))
			}
			oid, err := parseAttributeType(strings.TrimSpace(typ))
			if err != nil {
				return nil, err
			}
			v, err := unescapeValue(strings.TrimSpace(value))
			if err != nil {
				return nil, fmt.Errorf("value of %s: %w", strings.TrimSpace(typ), err)
			}
			if v == "" {
				return nil, fmt.Errorf("empty value for %s", strings.TrimSpace(typ))
			}
			if oid.Equal(oidCommonName) {
				if commonNames++; commonNames > 1 {
					return nil, errSeveralCommonNames
				}
			}
			rdn = append(rdn, pkix.AttributeTypeAndValue{Type: oid, Value: v})
		}
		seq = append(seq, rdn)
	}
	for i, j := 0, len(seq)-1; i < j; i, j = i+1, j-1 {
		seq[i], seq[j] = seq[j], seq[i]
	}
	return seq, nil
}

// commonNameOf returns the first common name in seq, or "".
func commonNameOf(seq pkix.RDNSequence) string {
	for _, rdn := range seq {
		for _, ava := range rdn {
			if ava.Type.Equal(oidCommonName) {
				if s, ok := ava.Value.(string); ok {
					return s
				}
			}
		}
	}
	return ""
}

func parseAttributeType(t string) (asn1.ObjectIdentifier, error) {
	if oid, ok := attributeTypes[strings.ToUpper(t)]; ok {
		return oid, nil
	}
	parts := strings.Split(t, ".")
	if len(parts) < 2 {
		return nil, fmt.Errorf("unknown attribute type %s: use CN, O, OU, C, ST, L, STREET, POSTALCODE, SERIALNUMBER, DC, UID or a dotted OID", request.Quote(t))
	}
	oid := make(asn1.ObjectIdentifier, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("attribute type %s is neither a known name nor a dotted OID", request.Quote(t))
		}
		oid[i] = n
	}
	return oid, nil
}

// splitUnescaped splits s at every sep not preceded by a backslash escape.
func splitUnescaped(s string, sep byte) []string {
	var parts []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++ // the escaped character never separates
		case sep:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// unescapeValue resolves RFC 4514 escapes: a backslash followed by a special
// character or by two hex digits.
func unescapeValue(v string) (string, error) {
	if strings.HasPrefix(v, "#") {
		return "", errors.New("hex-encoded values (#...) are not supported; write the value as text")
	}
	var b []byte
	for i := 0; i < len(v); i++ {
		if v[i] != '\\' {
			b = append(b, v[i])
			continue
		}
		if i+1 >= len(v) {
			return "", errors.New("trailing backslash")
		}
		if i+2 < len(v) && isHex(v[i+1]) && isHex(v[i+2]) {
			decoded, _ := hex.DecodeString(v[i+1 : i+3])
			b = append(b, decoded...)
			i += 2
			continue
		}
		if !strings.ContainsRune(`"+,;<>\ #=`, rune(v[i+1])) {
			return "", fmt.Errorf("%s cannot be escaped", request.Quote(v[i:i+2]))
		}
		b = append(b, v[i+1])
		i++
	}
	return string(b), nil
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}
