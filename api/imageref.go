package api

import (
	"fmt"
	"regexp"
	"strings"
)

// A function's image is one of two things:
//
//   - an uploaded OCI image archive in the scheduler's store, named by the
//     sha256 of the archive: "sha256:<hex>";
//   - a registry reference, "host[:port]/repo[:tag][@sha256:<hex>]". The
//     scheduler resolves it at deploy time and stores it pinned to the
//     manifest digest ("host/repo@sha256:<hex>"), so every agent runs
//     exactly that digest, whatever the tag points at later.

// ImageRef is a parsed, normalised registry reference.
type ImageRef struct {
	Domain string // "127.0.0.1:5000", "docker.io"
	Path   string // "library/busybox", "team/fn"
	Tag    string // "" when absent
	Digest string // "sha256:<hex>" when pinned, else ""
}

var (
	refPathComponentRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)
	refDomainRE        = regexp.MustCompile(`^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?$`)
	refTagRE           = regexp.MustCompile(`^[\w][\w.-]{0,127}$`)
)

// DockerHub is the domain a reference without one refers to.
const DockerHub = "docker.io"

// IsArchiveDigest reports whether image names an uploaded archive
// ("sha256:<hex>") rather than a registry reference.
func IsArchiveDigest(image string) bool { return digestRE.MatchString(image) }

// ParseImageRef parses a registry reference the way docker does:
// "busybox" is docker.io/library/busybox:latest, a first component with a
// dot, a colon or "localhost" is a registry host. A reference with
// neither tag nor digest gets the tag "latest".
func ParseImageRef(s string) (ImageRef, error) {
	var r ImageRef
	if s == "" {
		return r, fmt.Errorf("empty image reference")
	}
	if len(s) > 1024 {
		return r, fmt.Errorf("image reference is over 1024 characters")
	}
	if strings.ContainsAny(s, " \t\r\n") {
		return r, fmt.Errorf("%q: image reference holds white space", s)
	}
	if strings.Contains(s, "://") {
		return r, fmt.Errorf("%q: want host/repo:tag, not a URL", s)
	}
	rest := s
	if i := strings.IndexByte(rest, '@'); i >= 0 {
		r.Digest = rest[i+1:]
		rest = rest[:i]
		if !digestRE.MatchString(r.Digest) {
			return r, fmt.Errorf("%q: digest %q is not sha256:<64 hex>", s, r.Digest)
		}
	}
	// A tag follows the last colon after the last slash.
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && i > strings.LastIndexByte(rest, '/') {
		r.Tag = rest[i+1:]
		rest = rest[:i]
		if !refTagRE.MatchString(r.Tag) {
			return r, fmt.Errorf("%q: tag %q is not valid", s, r.Tag)
		}
	}
	first, path, found := strings.Cut(rest, "/")
	if found && (strings.ContainsAny(first, ".:") || first == "localhost" || strings.HasPrefix(first, "[")) {
		r.Domain = first
	} else {
		r.Domain, path = DockerHub, rest
	}
	if r.Domain == DockerHub && !strings.Contains(path, "/") {
		path = "library/" + path
	}
	if !refDomainRE.MatchString(r.Domain) {
		return r, fmt.Errorf("%q: registry host %q is not valid", s, r.Domain)
	}
	if path == "" {
		return r, fmt.Errorf("%q: no repository", s)
	}
	for _, c := range strings.Split(path, "/") {
		if !refPathComponentRE.MatchString(c) {
			return r, fmt.Errorf("%q: repository component %q must be lower case letters, digits and separators", s, c)
		}
	}
	if len(r.Domain)+1+len(path) > 255 {
		return r, fmt.Errorf("%q: repository name is over 255 characters", s)
	}
	r.Path = path
	if r.Tag == "" && r.Digest == "" {
		r.Tag = "latest"
	}
	return r, nil
}

// Name is the repository: "host/path".
func (r ImageRef) Name() string { return r.Domain + "/" + r.Path }

// String is the normalised reference: name, then ":tag", then "@digest".
func (r ImageRef) String() string {
	s := r.Name()
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest
	}
	return s
}

// Pinned is the reference by digest alone: "host/path@sha256:<hex>".
func (r ImageRef) Pinned(digest string) string { return r.Name() + "@" + digest }

// ValidateImage checks a spec's image: an archive digest, or a registry
// reference. With pinned set, a reference must carry a digest.
func ValidateImage(field, image string, pinned bool) error {
	if IsArchiveDigest(image) {
		return nil
	}
	if strings.HasPrefix(image, "sha256:") {
		return Invalid(field, "%q is not a sha256 digest", image)
	}
	ref, err := ParseImageRef(image)
	if err != nil {
		return Invalid(field, "not an archive digest (sha256:<hex>) nor a registry reference: %v", err)
	}
	if pinned && (ref.Digest == "" || ref.Tag != "") {
		return Invalid(field, "%q must be pinned to a manifest digest (host/repo@sha256:<hex>)", image)
	}
	return nil
}

// ResolveRequest asks the scheduler to resolve a registry reference.
type ResolveRequest struct {
	Image string `json:"image"`
}

// ResolvedImage is a registry reference resolved to the manifest an
// agent runs (linux/amd64).
type ResolvedImage struct {
	Ref       string `json:"ref"`        // the normalised reference asked for
	Image     string `json:"image"`      // pinned: "host/repo@sha256:<hex>"
	Digest    string `json:"digest"`     // what the reference resolved to (manifest or index)
	MediaType string `json:"media_type"` // of Digest
	// Manifest is the linux/amd64 image manifest: Digest itself, or the
	// index entry for the platform.
	Manifest string `json:"manifest"`
	Platform string `json:"platform"` // "linux/amd64"
	Layers   int    `json:"layers"`
	Size     int64  `json:"size"` // compressed: manifest, config and layers
}
