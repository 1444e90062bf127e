package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/platforms"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/remote"
)

// Registry images. A function whose Image is a registry reference pinned
// to a manifest digest ("host/repo@sha256:…", see api.ImageRef) is pulled
// through containerd: the docker resolver with the credentials of the
// agent's docker-style config (remote.ConfigPath, read on every pull),
// content into containerd's store, unpacked with overlayfs, linux/amd64
// only. The containerd image is named by the pinned reference, so every
// function and version that runs the same digest shares it.

// Image labels amber sets.
const (
	LabelPulledAt = "amber.pulled-at" // RFC 3339, when the agent pulled the image
)

// pullImage makes the pinned registry reference ref available as an
// unpacked image. Every error names the reference.
func (c *Containerd) pullImage(ctx context.Context, ref string) (containerd.Image, error) {
	ctx = c.ctx(ctx)
	r, err := api.ParseImageRef(ref)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	if r.Digest == "" {
		return nil, fmt.Errorf("image %s: not pinned to a digest: %w", ref, api.ErrInvalid)
	}
	name := r.Pinned(r.Digest)
	if img, err := c.client.GetImage(ctx, name); err == nil {
		if ok, _ := img.IsUnpacked(ctx, snapshotter); ok {
			return img, nil
		}
		if err := c.unpack(ctx, name, img, nil, nil); err != nil {
			return nil, err
		}
		return img, nil
	}
	creds, err := remote.LoadCredentials(remote.ConfigPath())
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", name, err)
	}
	resolver := remote.NewResolver(creds, nil)
	start := time.Now()
	// The manifest, index and config first: a clear error for the wrong
	// platform or credentials before any layer moves.
	info, blobs, err := remote.InspectBlobs(ctx, resolver, name)
	if err != nil {
		return nil, fmt.Errorf("pull %w", err)
	}
	c.log.Info("image pull", "image", name, "size", info.Size, "layers", info.Layers)
	var fetched atomic.Int64
	progress := images.HandlerFunc(func(_ context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		if images.IsLayerType(desc.MediaType) {
			fetched.Add(desc.Size)
		}
		return nil, nil
	})
	img, err := c.client.Pull(ctx, name,
		containerd.WithResolver(resolver),
		containerd.WithPlatformMatcher(platforms.OnlyStrict(remote.Platform)),
		containerd.WithImageHandler(progress),
		containerd.WithPullLabel(LabelPulledAt, time.Now().UTC().Format(time.RFC3339)),
	)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", err, context.Cause(ctx))
		}
		c.abortIngests(context.WithoutCancel(ctx), blobs)
		return nil, fmt.Errorf("pull image %s: %w", name, err)
	}
	// Unpacked only once its layers are counted within the limit.
	if err := c.unpack(ctx, name, img, nil, nil); err != nil {
		return nil, err
	}
	c.log.Info("image pulled", "image", name, "size", info.Size, "took", time.Since(start).Round(time.Millisecond))
	// The store just grew: keep it under its budget.
	go func() {
		if _, err := c.CollectImages(context.WithoutCancel(ctx), ImageBudget(), nil); err != nil {
			c.log.Warn("image collection", "err", err)
		}
	}()
	return img, nil
}

// abortIngests drops the partial downloads of blobs a failed pull left in
// the content store. containerd resumes an ingest where it stopped, so a
// corrupt blob left there would fail every later pull the same way.
func (c *Containerd) abortIngests(ctx context.Context, blobs []digest.Digest) {
	cs := c.client.ContentStore()
	// The refs containerd's fetcher ingests under (remotes.MakeRefKey).
	for _, b := range blobs {
		for _, prefix := range []string{"layer-", "config-", "manifest-", "index-"} {
			if err := cs.Abort(ctx, prefix+b.String()); err != nil && !errdefs.IsNotFound(err) {
				c.log.Warn("abort content ingest", "ref", prefix+b.String(), "err", err)
			}
		}
	}
}

// DefaultImageBudget is how many bytes of image content an agent keeps
// before it collects images nothing uses (AMBER_IMAGE_BUDGET_MB overrides).
const DefaultImageBudget int64 = 10 << 30

// imageMinAge protects an image this recent from collection: it was just
// pulled or imported for an instance about to start.
const imageMinAge = 10 * time.Minute

// ImageBudget is the image store budget in bytes.
func ImageBudget() int64 {
	if v, err := strconv.ParseInt(os.Getenv("AMBER_IMAGE_BUDGET_MB"), 10, 64); err == nil && v > 0 {
		return v << 20
	}
	return DefaultImageBudget
}

// ImageInfo is one image an agent holds.
type ImageInfo struct {
	Name      string    `json:"name"` // "amber.local/fn@sha256:…" (archive) or "host/repo@sha256:…" (registry)
	Digest    string    `json:"digest"`
	Size      int64     `json:"size"`   // content bytes (compressed layers, manifests, config)
	InUse     bool      `json:"in_use"` // a container (instance) runs it
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Images lists the images in amber's containerd namespace, largest
// first, with whether an instance uses them.
func (c *Containerd) Images(ctx context.Context) ([]ImageInfo, error) {
	ctx = c.ctx(ctx)
	imgs, err := c.client.ImageService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	used, err := c.imagesInUse(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]ImageInfo, 0, len(imgs))
	for _, im := range imgs {
		size, err := containerd.NewImage(c.client, im).Size(ctx)
		if err != nil && !errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("image %s size: %w", im.Name, err)
		}
		out = append(out, ImageInfo{Name: im.Name, Digest: im.Target.Digest.String(), Size: size,
			InUse: used[im.Name], CreatedAt: im.CreatedAt, UpdatedAt: im.UpdatedAt})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Size > out[j].Size })
	return out, nil
}

// imagesInUse is the set of image names some container in the namespace
// (this agent's or another's sharing the containerd) was made from.
func (c *Containerd) imagesInUse(ctx context.Context) (map[string]bool, error) {
	conts, err := c.client.ContainerService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	used := map[string]bool{}
	for _, ct := range conts {
		used[ct.Image] = true
	}
	return used, nil
}

// CollectImages deletes images while the store is over budget bytes,
// least recently created or updated first. It never deletes an image an
// instance runs, one keep reports true for (a function version the
// caller saw recently; nil keeps none), or one younger than ten minutes.
// containerd's garbage collector then removes their content and
// snapshots. It returns the names deleted.
func (c *Containerd) CollectImages(ctx context.Context, budget int64, keep func(name string) bool) ([]string, error) {
	list, err := c.Images(ctx)
	if err != nil {
		return nil, err
	}
	var total int64
	for _, im := range list {
		total += im.Size
	}
	if total <= budget {
		return nil, nil
	}
	victims := collectable(list, keep, time.Now())
	ctx = c.ctx(ctx)
	var removed []string
	var errs []error
	for _, im := range victims {
		if total <= budget {
			break
		}
		c.forgetImage(im.Name)
		if err := c.client.ImageService().Delete(ctx, im.Name, images.SynchronousDelete()); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete image %s: %w", im.Name, err))
			continue
		}
		total -= im.Size
		removed = append(removed, im.Name)
		c.log.Info("image collected", "image", im.Name, "size", im.Size)
	}
	return removed, errors.Join(errs...)
}

// collectable picks the images that may go, oldest use first.
func collectable(list []ImageInfo, keep func(string) bool, now time.Time) []ImageInfo {
	var out []ImageInfo
	for _, im := range list {
		last := im.UpdatedAt
		if im.CreatedAt.After(last) {
			last = im.CreatedAt
		}
		if im.InUse || (keep != nil && keep(im.Name)) || now.Sub(last) < imageMinAge {
			continue
		}
		out = append(out, im)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].UpdatedAt.Before(out[j].UpdatedAt) })
	return out
}

// forgetImage drops the memo of an image about to be deleted, so the next
// launch pulls or imports it again.
func (c *Containerd) forgetImage(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, p := range c.pulls {
		select {
		case <-p.done:
			if p.img != nil && p.img.Name() == name {
				delete(c.pulls, k)
			}
		default:
		}
	}
}
