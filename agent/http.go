package agent

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/amberfn/amber/api"
)

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// Handler serves the agent's API:
//
//	POST /v1/functions/{name}/invoke   (Amber-Function-Version, Amber-Request-Id headers; body = payload;
//	                                    Amber-Log-Type: Tail adds Amber-Log-Result, the base64 of the log tail)
//	GET  /v1/functions/{name}/logs?since=RFC3339Nano&limit=N
//	GET  /v1/images                   what the image store holds (name, digest, size, in use)
//	GET  /v1/instances
//	POST /v1/images/pull               ({"image":"host/repo@sha256:…"} → ndjson api.PullProgress lines; pullhttp.go)
//	GET  /metrics                      Prometheus text: node figures, instances by state per function
//	GET  /healthz
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("POST /v1/functions/{name}/invoke", a.auth(a.handleInvoke))
	mux.HandleFunc("GET /v1/functions/{name}/logs", a.auth(a.handleLogs))
	mux.HandleFunc("POST /v1/images/pull", a.auth(a.handlePull))
	mux.HandleFunc("GET /v1/images", a.auth(a.handleImages))
	mux.HandleFunc("GET /metrics", a.auth(a.handleMetrics))
	mux.HandleFunc("GET /v1/instances", a.auth(func(w http.ResponseWriter, _ *http.Request) {
		api.WriteJSON(w, http.StatusOK, a.Instances())
	}))
	return mux
}

func (a *Agent) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.token != "" {
			got := r.Header.Get("Authorization")
			if subtle.ConstantTimeCompare([]byte(got), []byte("Bearer "+a.token)) != 1 {
				api.WriteError(w, fmt.Errorf("missing or wrong bearer token: %w", api.ErrUnauthorized))
				return
			}
		}
		h(w, r)
	}
}

func (a *Agent) handleInvoke(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := api.ValidateName("function", name); err != nil {
		api.WriteError(w, err)
		return
	}
	version, err := strconv.Atoi(r.Header.Get(api.HeaderVersion))
	if err != nil || version < 1 {
		api.WriteError(w, api.Invalid("version", "header %s must be a positive integer, got %q", api.HeaderVersion, r.Header.Get(api.HeaderVersion)))
		return
	}
	payload, err := api.ReadPayload(r)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	res, err := a.Invoke(r.Context(), name, version, r.Header.Get(api.HeaderRequestID), payload)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	res.WriteHeaders(w.Header())
	if r.Header.Get(api.HeaderLogType) == api.LogTypeTail {
		w.Header().Set(api.HeaderLogResult, base64.StdEncoding.EncodeToString(a.LogTail(name, res.RequestID, api.MaxLogTail)))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(res.Payload)
}

func (a *Agent) handleLogs(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := api.ValidateName("function", name); err != nil {
		api.WriteError(w, err)
		return
	}
	var since time.Time
	if v := r.URL.Query().Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			api.WriteError(w, api.Invalid("since", "%q is not an RFC 3339 time", v))
			return
		}
		since = t
	}
	limit, err := api.ParseLogLimit(r.URL.Query().Get("limit"))
	if err != nil {
		api.WriteError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, a.Logs(name, since, limit))
}

// handleImages says what the agent's image store holds.
func (a *Agent) handleImages(w http.ResponseWriter, r *http.Request) {
	lister, ok := a.launch.(interface {
		Images(context.Context) ([]ImageInfo, error)
	})
	if !ok {
		api.WriteError(w, fmt.Errorf("this agent's launcher keeps no images: %w", api.ErrUnavailable))
		return
	}
	imgs, err := lister.Images(r.Context())
	if err != nil {
		api.WriteError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, imgs)
}
