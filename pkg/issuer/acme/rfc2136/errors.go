package rfc2136

import (
	"errors"
	"fmt"

	"github.com/miekg/dns"
)

// PermanentError is a failure that trying again unchanged cannot mend: the
// nameserver refused the update or its signature, or serves no zone for
// the name. Other errors, such as timeouts and SERVFAIL, are worth a retry.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }

func (e *PermanentError) Unwrap() error { return e.Err }

// updateError classifies the outcome of an update: the nameserver's answer
// r, if any, and the error of the exchange. It is nil when the update was
// applied.
func updateError(r *dns.Msg, err error) error {
	if r != nil {
		if tsig := r.IsTsig(); tsig != nil && tsig.Error != dns.RcodeSuccess {
			return &PermanentError{Err: tsigRefusal(int(tsig.Error))}
		}
		if r.Rcode != dns.RcodeSuccess {
			return refusal(r.Rcode)
		}
	}
	switch {
	case errors.Is(err, dns.ErrSig), errors.Is(err, dns.ErrTime):
		return &PermanentError{Err: fmt.Errorf("the nameserver's answer fails TSIG verification (%w); check the TSIG secret", err)}
	case err != nil:
		return err
	}
	return nil
}

// tsigRefusal explains the TSIG error of an update's answer (RFC 8945
// §5.2): the nameserver did not check the update itself.
func tsigRefusal(code int) error {
	name := rcodeName(code)
	switch code {
	case dns.RcodeBadKey:
		return fmt.Errorf("the nameserver refused the update: %s, it has no TSIG key of that name and algorithm; check the TSIG key name and algorithm", name)
	case dns.RcodeBadSig:
		return fmt.Errorf("the nameserver refused the update: %s, the signature does not match its secret of the TSIG key; check the TSIG secret", name)
	case dns.RcodeBadTime:
		return fmt.Errorf("the nameserver refused the update: %s; the clocks of this host and the nameserver are more than %d seconds apart", name, fudge)
	}
	return fmt.Errorf("the nameserver refused the update's TSIG signature: %s", name)
}

// refusal explains the response code of an update's answer (RFC 2136 §2.2),
// and whether the update may be tried again.
func refusal(rcode int) error {
	name := rcodeName(rcode)
	var err error
	switch rcode {
	case dns.RcodeServerFailure:
		return fmt.Errorf("the nameserver failed the update: %s", name)
	case dns.RcodeNotAuth:
		err = fmt.Errorf("the nameserver refused the update: %s, it is not authoritative for the zone or does not take the TSIG key; check the zone and the TSIG key name and secret", name)
	case dns.RcodeRefused:
		err = fmt.Errorf("the nameserver refused the update: %s; check that it allows the TSIG key to update the zone", name)
	case dns.RcodeNotZone:
		err = fmt.Errorf("the nameserver refused the update: %s, the record is outside the zone; check the zone", name)
	default:
		err = fmt.Errorf("the nameserver refused the update: %s", name)
	}
	return &PermanentError{Err: err}
}

// queryError explains a response code other than NOERROR and NXDOMAIN to a
// query, and whether the query may be tried again.
func queryError(rcode int) error {
	name := rcodeName(rcode)
	switch rcode {
	case dns.RcodeServerFailure:
		return fmt.Errorf("the nameserver answered %s", name)
	case dns.RcodeRefused, dns.RcodeNotAuth:
		return &PermanentError{Err: fmt.Errorf("the nameserver answered %s; it serves no zone holding the name", name)}
	}
	return &PermanentError{Err: fmt.Errorf("the nameserver answered %s", name)}
}

func rcodeName(rcode int) string {
	if name, ok := dns.RcodeToString[rcode]; ok {
		return name
	}
	return fmt.Sprintf("RCODE%d", rcode)
}
