package api

import (
	"errors"
	"fmt"
	"net/http"
)

// Sentinel errors. Servers map them to HTTP statuses; clients map statuses
// back, so callers test with errors.Is across the wire.
var (
	ErrInvalid      = errors.New("invalid input")
	ErrNotFound     = errors.New("not found")
	ErrUnauthorized = errors.New("unauthorized")
	ErrConflict     = errors.New("conflict")
	ErrUnavailable  = errors.New("unavailable")
	ErrTooLarge     = errors.New("too large")
	ErrTimeout      = errors.New("timed out")
	ErrThrottled    = errors.New("too many requests")
)

// FieldError is a validation failure naming the offending field.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }
func (e *FieldError) Unwrap() error { return ErrInvalid }

// Invalid returns a FieldError for field, formatted like fmt.Sprintf.
func Invalid(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// StatusFor maps an error to its HTTP status and stable code.
func StatusFor(err error) (int, string) {
	switch {
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest, "InvalidParameterValue"
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound, "ResourceNotFound"
	case errors.Is(err, ErrUnauthorized):
		return http.StatusUnauthorized, "Unauthorized"
	case errors.Is(err, ErrConflict):
		return http.StatusConflict, "Conflict"
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge, "RequestTooLarge"
	case errors.Is(err, ErrThrottled):
		return http.StatusTooManyRequests, "TooManyRequestsException"
	case errors.Is(err, ErrTimeout):
		return http.StatusGatewayTimeout, "Timeout"
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable, "ServiceUnavailable"
	default:
		return http.StatusInternalServerError, "InternalError"
	}
}

// SentinelFor maps an HTTP status back to a sentinel error.
func SentinelFor(status int) error {
	switch status {
	case http.StatusBadRequest:
		return ErrInvalid
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusUnauthorized, http.StatusForbidden:
		return ErrUnauthorized
	case http.StatusConflict:
		return ErrConflict
	case http.StatusRequestEntityTooLarge:
		return ErrTooLarge
	case http.StatusGatewayTimeout:
		return ErrTimeout
	case http.StatusTooManyRequests:
		return ErrThrottled
	case http.StatusServiceUnavailable, http.StatusBadGateway:
		return ErrUnavailable
	default:
		return errors.New(http.StatusText(status))
	}
}

// WriteError writes err as an ErrorBody with the status StatusFor gives.
func WriteError(w http.ResponseWriter, err error) {
	status, code := StatusFor(err)
	body := ErrorBody{Error: ErrorDetail{Code: code, Message: err.Error()}}
	var fe *FieldError
	if errors.As(err, &fe) {
		body.Error.Field = fe.Field
	}
	WriteJSON(w, status, body)
}
