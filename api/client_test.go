package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestClientErrors(t *testing.T) {
	tests := []struct {
		name      string
		handler   http.HandlerFunc
		sentinel  error
		wantMsg   string
		wantField string
	}{
		{
			name:     "error body",
			handler:  func(w http.ResponseWriter, _ *http.Request) { WriteError(w, Invalid("memory", "64 MB is too little")) },
			sentinel: ErrInvalid, wantMsg: "memory: 64 MB is too little", wantField: "memory",
		},
		{
			name: "field not in message",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				WriteJSON(w, 400, ErrorBody{Error: ErrorDetail{Code: "X", Message: "too little", Field: "memory"}})
			},
			sentinel: ErrInvalid, wantMsg: "memory: too little", wantField: "memory",
		},
		{
			name:     "internal error",
			handler:  func(w http.ResponseWriter, _ *http.Request) { WriteError(w, errors.New(`function "x" not found`)) },
			sentinel: nil, wantMsg: `function "x" not found`,
		},
		{
			name:     "plain text body",
			handler:  func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "upstream broke", http.StatusBadGateway) },
			sentinel: ErrUnavailable, wantMsg: "502 Bad Gateway: upstream broke",
		},
		{
			name:     "empty 401",
			handler:  func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(401) },
			sentinel: ErrUnauthorized, wantMsg: "401 Unauthorized",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			_, err := NewClient(srv.URL).Agents(context.Background())
			var se *StatusError
			if !errors.As(err, &se) {
				t.Fatalf("err %v is not a *StatusError", err)
			}
			if tt.sentinel != nil && !errors.Is(err, tt.sentinel) {
				t.Errorf("err %v does not wrap %v", err, tt.sentinel)
			}
			if !strings.HasPrefix(err.Error(), tt.wantMsg) || se.Field != tt.wantField {
				t.Errorf("err %q field %q; want %q field %q", err, se.Field, tt.wantMsg, tt.wantField)
			}
		})
	}
}

func TestClientSendsToken(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get("Authorization"))
		WriteJSON(w, 200, []AgentStatus{})
	}))
	defer srv.Close()
	ctx := context.Background()
	if _, err := NewClient(srv.URL, WithToken("abc")).Agents(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := NewClient(srv.URL).Agents(ctx); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != "Bearer abc" || got[1] != "" {
		t.Errorf("Authorization headers %q", got)
	}
}
