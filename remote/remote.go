// Package remote talks to OCI registries for the scheduler and the agent:
// it resolves references to manifest digests, checks the platform, and
// builds containerd's docker resolver with credentials from a docker-style
// config file (basic auth and the bearer-token flow, as containerd does).
//
// Loopback registries (localhost, 127.0.0.1, ::1) are spoken to over plain
// HTTP, everything else over HTTPS.
package remote

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/platforms"
	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/amberfn/amber/api"
)

// Platform is the one platform amber runs.
var Platform = ocispec.Platform{OS: "linux", Architecture: "amd64"}

// PlatformString is Platform as "os/arch".
const PlatformString = "linux/amd64"

// EnvConfig names a docker-style config file with registry credentials.
// Without it, $DOCKER_CONFIG/config.json, then ~/.docker/config.json.
const EnvConfig = "AMBER_REGISTRY_CONFIG"

// ConfigPath is where credentials are read from ("" when there is no
// home folder to look in).
func ConfigPath() string {
	if p := os.Getenv(EnvConfig); p != "" {
		return p
	}
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		return filepath.Join(d, "config.json")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".docker", "config.json")
	}
	return ""
}

// Credentials are registry logins by host ("127.0.0.1:5000", "docker.io").
type Credentials map[string]Login

// Login is one registry's credentials: a user and password, or an
// identity (refresh) token.
type Login struct {
	Username      string
	Password      string
	IdentityToken string
}

type configFile struct {
	Auths map[string]struct {
		Auth          string `json:"auth"`
		Username      string `json:"username"`
		Password      string `json:"password"`
		IdentityToken string `json:"identitytoken"`
	} `json:"auths"`
}

// LoadCredentials reads the "auths" of a docker-style config file. A
// missing file is no credentials; a malformed one is an error naming it.
// Credential helpers (credsStore, credHelpers) are not supported.
func LoadCredentials(path string) (Credentials, error) {
	creds := Credentials{}
	if path == "" {
		return creds, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return creds, nil
	}
	if err != nil {
		return nil, fmt.Errorf("registry credentials: %w", err)
	}
	var cf configFile
	if err := json.Unmarshal(b, &cf); err != nil {
		return nil, fmt.Errorf("registry credentials %s: %w", path, err)
	}
	for key, a := range cf.Auths {
		l := Login{Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken}
		if a.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(a.Auth)
			if err != nil {
				return nil, fmt.Errorf("registry credentials %s: auths[%q].auth is not base64: %w", path, key, err)
			}
			u, p, ok := strings.Cut(string(raw), ":")
			if !ok {
				return nil, fmt.Errorf("registry credentials %s: auths[%q].auth is not user:password", path, key)
			}
			l.Username, l.Password = u, p
		}
		creds[normalizeHost(key)] = l
	}
	return creds, nil
}

// normalizeHost turns a config key ("https://index.docker.io/v1/",
// "http://reg:5000", "reg:5000") into the host it names.
func normalizeHost(key string) string {
	h := key
	if i := strings.Index(h, "://"); i >= 0 {
		h = h[i+3:]
	}
	h, _, _ = strings.Cut(h, "/")
	switch h {
	case "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return api.DockerHub
	}
	return h
}

// lookup is the containerd credentials callback: host is the registry
// host being spoken to (registry-1.docker.io for Docker Hub).
func (c Credentials) lookup(host string) (string, string, error) {
	l, ok := c[normalizeHost(host)]
	if !ok {
		return "", "", nil
	}
	if l.IdentityToken != "" {
		return "", l.IdentityToken, nil
	}
	return l.Username, l.Password, nil
}

// HTTPClient is the client registries are spoken to with: it fails a
// connection that does not answer instead of hanging on it.
func HTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.ResponseHeaderTimeout = 30 * time.Second
	t.TLSHandshakeTimeout = 10 * time.Second
	return &http.Client{Transport: t}
}

// NewResolver is containerd's docker resolver with creds, plain HTTP for
// loopback registries, and hc (HTTPClient() when nil).
func NewResolver(creds Credentials, hc *http.Client) remotes.Resolver {
	if hc == nil {
		hc = HTTPClient()
	}
	auth := docker.NewDockerAuthorizer(docker.WithAuthClient(hc), docker.WithAuthCreds(creds.lookup))
	return docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(
			docker.WithAuthorizer(auth),
			docker.WithClient(hc),
			docker.WithPlainHTTP(docker.MatchLocalhost),
		),
	})
}

// maxManifest bounds a manifest, an index or an image config read here.
const maxManifest = api.MaxManifestBytes

// Inspect resolves ref (a registry reference, by tag or digest) and
// checks that it holds a linux/amd64 image: directly, or as an entry of
// an index. Errors name the reference.
func Inspect(ctx context.Context, resolver remotes.Resolver, ref string) (*api.ResolvedImage, error) {
	res, _, err := InspectBlobs(ctx, resolver, ref)
	return res, err
}

// InspectBlobs is Inspect that also returns the digests of the linux/amd64
// image's blobs: its manifest, config and layers.
func InspectBlobs(ctx context.Context, resolver remotes.Resolver, ref string) (*api.ResolvedImage, []digest.Digest, error) {
	res, m, mdesc, err := inspect(ctx, resolver, ref)
	if err != nil {
		return nil, nil, err
	}
	blobs := []digest.Digest{mdesc.Digest, m.Config.Digest}
	for _, l := range m.Layers {
		blobs = append(blobs, l.Digest)
	}
	return res, blobs, nil
}

func inspect(ctx context.Context, resolver remotes.Resolver, ref string) (*api.ResolvedImage, *ocispec.Manifest, ocispec.Descriptor, error) {
	none := ocispec.Descriptor{}
	r, err := api.ParseImageRef(ref)
	if err != nil {
		return nil, nil, none, err
	}
	norm := r.String()
	fail := func(format string, args ...any) error {
		return fmt.Errorf("image %s: "+format, append([]any{norm}, args...)...)
	}
	name, desc, err := resolver.Resolve(ctx, norm)
	if err != nil {
		return nil, nil, none, fail("resolve: %w", err)
	}
	fetcher, err := resolver.Fetcher(ctx, name)
	if err != nil {
		return nil, nil, none, fail("%w", err)
	}
	out := &api.ResolvedImage{Ref: norm, Image: r.Pinned(desc.Digest.String()), Digest: desc.Digest.String(),
		MediaType: desc.MediaType, Platform: PlatformString}
	top, err := fetchBlob(ctx, fetcher, desc)
	if err != nil {
		return nil, nil, none, fail("%w", err)
	}
	mdesc := desc
	mbytes := top
	if images.IsIndexType(desc.MediaType) {
		var idx ocispec.Index
		if err := json.Unmarshal(top, &idx); err != nil {
			return nil, nil, none, fail("index %s: %w", desc.Digest, err)
		}
		match := platforms.OnlyStrict(Platform)
		var found *ocispec.Descriptor
		var seen []string
		for i, m := range idx.Manifests {
			if m.Platform == nil {
				continue
			}
			seen = append(seen, platforms.Format(*m.Platform))
			if found == nil && match.Match(*m.Platform) {
				found = &idx.Manifests[i]
			}
		}
		if found == nil {
			return nil, nil, none, fail("no manifest for %s (the index has %s): %w", PlatformString, listOrNone(seen), ErrPlatform)
		}
		mdesc = *found
		if mbytes, err = fetchBlob(ctx, fetcher, mdesc); err != nil {
			return nil, nil, none, fail("%w", err)
		}
	} else if !images.IsManifestType(desc.MediaType) {
		return nil, nil, none, fail("%s is neither an image manifest nor an index", desc.MediaType)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(mbytes, &m); err != nil {
		return nil, nil, none, fail("manifest %s: %w", mdesc.Digest, err)
	}
	cb, err := fetchBlob(ctx, fetcher, m.Config)
	if err != nil {
		return nil, nil, none, fail("config: %w", err)
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(cb, &cfg); err != nil {
		return nil, nil, none, fail("config %s: %w", m.Config.Digest, err)
	}
	if p := platforms.Normalize(cfg.Platform); !platforms.OnlyStrict(Platform).Match(p) {
		return nil, nil, none, fail("manifest %s is for %s, not %s: %w", mdesc.Digest, platforms.Format(p), PlatformString, ErrPlatform)
	}
	out.Manifest = mdesc.Digest.String()
	out.Layers = len(m.Layers)
	out.Size = mdesc.Size + m.Config.Size
	for _, l := range m.Layers {
		out.Size += l.Size
	}
	return out, &m, mdesc, nil
}

// ErrPlatform marks an image with no linux/amd64 manifest.
var ErrPlatform = errors.New("wrong platform")

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "no platforms"
	}
	return strings.Join(s, ", ")
}

// fetchBlob reads a small blob (manifest, index, config) and checks its
// digest.
func fetchBlob(ctx context.Context, f remotes.Fetcher, desc ocispec.Descriptor) ([]byte, error) {
	if desc.Size > maxManifest {
		return nil, fmt.Errorf("%s is %d bytes, over the %d-byte limit: %w", desc.Digest, desc.Size, maxManifest, api.ErrTooLarge)
	}
	rc, err := f.Fetch(ctx, desc)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", desc.Digest, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxManifest+1))
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", desc.Digest, err)
	}
	if got := digest.FromBytes(b); got != desc.Digest {
		return nil, fmt.Errorf("fetch %s: content has digest %s", desc.Digest, got)
	}
	return b, nil
}
