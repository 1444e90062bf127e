package scheduler

import (
	"context"
	"net/http"
	"time"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/remote"
)

// resolveTimeout bounds resolving a registry reference at deploy time.
const resolveTimeout = 30 * time.Second

// resolveImage resolves a registry reference with the credentials of the
// scheduler's docker-style config (remote.ConfigPath, read on every
// call). Every failure is a 400 naming the "image" field: the deploy is
// refused and the previous version keeps serving.
func (s *Scheduler) resolveImage(ctx context.Context, ref string) (*api.ResolvedImage, error) {
	if err := api.ValidateImage("image", ref, false); err != nil {
		return nil, err
	}
	if api.IsArchiveDigest(ref) {
		return nil, api.Invalid("image", "%s is an archive digest, not a registry reference", ref)
	}
	creds, err := remote.LoadCredentials(remote.ConfigPath())
	if err != nil {
		return nil, api.Invalid("image", "%v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	start := time.Now()
	res, err := remote.Inspect(ctx, remote.NewResolver(creds, nil), ref)
	if err != nil {
		s.log.Warn("image reference not resolved", "ref", ref, "err", err.Error())
		return nil, api.Invalid("image", "%v", err)
	}
	s.log.Info("image reference resolved", "ref", res.Ref, "image", res.Image, "manifest", res.Manifest,
		"size", res.Size, "took", time.Since(start).Round(time.Millisecond))
	return res, nil
}

// pinImage replaces a registry reference in spec.Image with the reference
// pinned to the digest it resolves to now, and keeps what the operator
// gave in spec.ImageRef. A tag moved later does not change the function.
// Archive digests are left alone.
func (s *Scheduler) pinImage(ctx context.Context, spec *api.FunctionSpec) error {
	if spec.Image == "" || api.IsArchiveDigest(spec.Image) {
		return nil
	}
	res, err := s.resolveImage(ctx, spec.Image)
	if err != nil {
		return err
	}
	if spec.ImageRef == "" {
		spec.ImageRef = spec.Image
	}
	spec.Image = res.Image
	return nil
}

// handleResolveImage serves POST /v1/images/resolve.
func (s *Scheduler) handleResolveImage(w http.ResponseWriter, r *http.Request) {
	var req api.ResolveRequest
	if err := decodeJSON(w, r, 64<<10, &req); err != nil {
		api.WriteError(w, err)
		return
	}
	res, err := s.resolveImage(r.Context(), req.Image)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, res)
}
