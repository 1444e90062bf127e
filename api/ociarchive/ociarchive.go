// Package ociarchive writes and reads single-platform OCI image archives: the
// OCI image layout (oci-layout, index.json, blobs/sha256/<hex>) packed in a
// tar, the format containerd's client.Import, `ctr images import` and
// skopeo's oci-archive transport accept.
//
// Build packs a function's directory (the Lambda custom-runtime layout: an
// executable named bootstrap plus whatever it needs) as one gzip'd layer
// under /var/task. Inspect reads an archive back, from Build or any other OCI
// tool, and verifies every blob it references.
//
// The package uses the standard library only, like the rest of api/.
package ociarchive

import (
	"errors"
	"fmt"

	"github.com/amberfn/amber/api"
)

// Sentinel errors. Every error this package returns for a bad input wraps one
// of them, so callers test with errors.Is.
var (
	// ErrNoBootstrap: the directory given to Build has no executable regular
	// file named bootstrap.
	ErrNoBootstrap = errors.New("ociarchive: no executable bootstrap")
	// ErrNotArchive: the input is not a tar, or a tar without an OCI image
	// layout (no index.json).
	ErrNotArchive = errors.New("ociarchive: not an OCI image archive")
	// ErrCorrupt: the archive is truncated, a referenced blob is missing, its
	// size or sha256 differs from its descriptor, or a JSON document is
	// malformed.
	ErrCorrupt = errors.New("ociarchive: corrupt archive")
	// ErrUnsupported: the archive is valid but holds something this package
	// does not handle (no linux/amd64 image, a digest algorithm other than
	// sha256, an unknown manifest media type, a file type Build cannot pack).
	ErrUnsupported = errors.New("ociarchive: unsupported")
	// ErrTooLarge: index.json, a manifest, an index or an image config is
	// over api.MaxManifestBytes. It wraps api.ErrTooLarge.
	ErrTooLarge = fmt.Errorf("ociarchive: document too large: %w", api.ErrTooLarge)
	// ErrInvalid: a Build option or the directory argument is not usable.
	ErrInvalid = errors.New("ociarchive: invalid argument")
)

// Media types and annotations written by Build.
const (
	MediaTypeLayout     = "application/vnd.oci.layout.header.v1+json"
	MediaTypeIndex      = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest   = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig     = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayerGzip  = "application/vnd.oci.image.layer.v1.tar+gzip"
	MediaTypeLayer      = "application/vnd.oci.image.layer.v1.tar"
	AnnotationRefName   = "org.opencontainers.image.ref.name"
	AnnotationImageName = "io.containerd.image.name"
	imageLayoutVersion  = "1.0.0"
	dockerManifest      = "application/vnd.docker.distribution.manifest.v2+json"
	dockerManifestList  = "application/vnd.docker.distribution.manifest.list.v2+json"
	dockerLayerGzip     = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	defaultPrefix       = "var/task"
	defaultRefName      = "latest"
	defaultPath         = "/usr/local/bin:/usr/bin:/bin:/opt/bin"
	wantOS, wantArch    = "linux", "amd64"
	maxJSONSize         = api.MaxManifestBytes // index, manifest and config documents
)

// Image describes one image in an archive.
type Image struct {
	// ManifestDigest and ConfigDigest are "sha256:<hex>".
	ManifestDigest string
	ConfigDigest   string
	// Config is the runtime part of the image config.
	Config ImageConfig
	// OS and Architecture are taken from the image config.
	OS, Architecture string
	// RefName is the org.opencontainers.image.ref.name annotation of the
	// chosen manifest's descriptor, if any.
	RefName string
	// Size is the total size in bytes of the image's blobs: manifest,
	// config and (compressed) layers.
	Size int64
}

// ImageConfig holds the parts of an OCI image config amber uses.
type ImageConfig struct {
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	Env        []string `json:"Env,omitempty"`
	WorkingDir string   `json:"WorkingDir,omitempty"`
	User       string   `json:"User,omitempty"`
}

// descriptor is an OCI content descriptor.
type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
}

type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType,omitempty"`
	Manifests     []descriptor `json:"manifests"`
}

type manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType,omitempty"`
	Config        descriptor   `json:"config"`
	Layers        []descriptor `json:"layers"`
}

type rootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

type history struct {
	Created    string `json:"created,omitempty"`
	CreatedBy  string `json:"created_by,omitempty"`
	Comment    string `json:"comment,omitempty"`
	EmptyLayer bool   `json:"empty_layer,omitempty"`
}

type imageConfigFile struct {
	Created      string      `json:"created,omitempty"`
	Architecture string      `json:"architecture"`
	OS           string      `json:"os"`
	Config       ImageConfig `json:"config"`
	RootFS       rootFS      `json:"rootfs"`
	History      []history   `json:"history,omitempty"`
}

type layout struct {
	ImageLayoutVersion string `json:"imageLayoutVersion"`
}
