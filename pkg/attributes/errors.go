package attributes

import (
	"fmt"
	"strings"

	"github.com/certmint/certmint/pkg/request"
)

// FieldError is a problem with one volume attribute. Its message names the
// attribute as the user writes it in the pod spec, so the kubelet's event on
// the pod tells them what to change.
type FieldError struct {
	Key     string
	Message string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("volumeAttributes[%s]: %s", request.Quote(e.Key), e.Message)
}

// Error is every problem found in one volume's attributes: a user fixing a
// pod spec should not have to find them one publish attempt at a time.
type Error struct {
	Fields []*FieldError
}

func (e *Error) Error() string {
	msgs := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		msgs[i] = f.Error()
	}
	return "invalid volume attributes: " + strings.Join(msgs, "; ")
}
