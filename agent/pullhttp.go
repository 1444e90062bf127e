package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/amberfn/amber/api"
)

// imagePuller is a launcher that can pull a registry image ahead of use
// (the scheduler pre-pulls at deploy). *Containerd implements it.
type imagePuller interface {
	PullImage(ctx context.Context, ref string, progress func(api.PullProgress)) error
}

// pullProgressEvery is how often a pull in flight reports its progress.
const pullProgressEvery = 250 * time.Millisecond

// PullImage makes the pinned registry reference ref available as an
// unpacked image, through the same memoized path launches use, calling
// progress (when not nil) every 250 ms with the bytes the content store's
// active ingests hold.
func (c *Containerd) PullImage(ctx context.Context, ref string, progress func(api.PullProgress)) error {
	if err := api.ValidateImage("image", ref, true); err != nil {
		return err
	}
	if api.IsArchiveDigest(ref) {
		return api.Invalid("image", "%s is an archive digest, not a registry reference", ref)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if progress != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(pullProgressEvery)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
				}
				sts, err := c.client.ContentStore().ListStatuses(c.ctx(ctx))
				if err != nil {
					continue
				}
				var p api.PullProgress
				for _, s := range sts {
					p.Bytes += s.Offset
					p.Total += s.Total
				}
				if len(sts) > 0 {
					p.Status = "pulling"
				} else {
					p.Status = "unpacking"
				}
				progress(p)
			}
		}()
	}
	_, err := c.ensureImage(ctx, ref)
	close(stop)
	wg.Wait()
	return err
}

// handlePull serves POST /v1/images/pull: {"image":"host/repo@sha256:…"}
// answered with newline-delimited api.PullProgress lines, the last one
// Done or Error. Bad input is a plain 400 before any line.
func (a *Agent) handlePull(w http.ResponseWriter, r *http.Request) {
	var req api.PullRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		api.WriteError(w, api.Invalid("body", "malformed JSON: %v", err))
		return
	}
	if req.Image == "" {
		api.WriteError(w, api.Invalid("image", "an image reference is required"))
		return
	}
	if api.IsArchiveDigest(req.Image) {
		api.WriteError(w, api.Invalid("image", "%s is an archive digest, not a registry reference", req.Image))
		return
	}
	if err := api.ValidateImage("image", req.Image, true); err != nil {
		api.WriteError(w, err)
		return
	}
	p, ok := a.launch.(imagePuller)
	if !ok {
		api.WriteError(w, fmt.Errorf("this agent's launcher cannot pull images: %w", api.ErrUnavailable))
		return
	}
	w.Header().Set("Content-Type", api.ContentTypeNDJSON)
	w.WriteHeader(http.StatusOK)
	var mu sync.Mutex
	enc := json.NewEncoder(w)
	fl, _ := w.(http.Flusher)
	send := func(l api.PullProgress) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(l)
		if fl != nil {
			fl.Flush()
		}
	}
	start := time.Now()
	send(api.PullProgress{Status: "pulling"})
	if err := p.PullImage(r.Context(), req.Image, send); err != nil {
		a.log.Warn("image pre-pull failed", "image", req.Image, "err", err.Error())
		send(api.PullProgress{Error: err.Error()})
		return
	}
	a.log.Info("image pre-pulled", "image", req.Image, "took", time.Since(start).Round(time.Millisecond))
	send(api.PullProgress{Done: true})
}
