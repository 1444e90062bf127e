package api

import (
	"regexp"
	"strings"
	"time"
)

// Limits on what a function spec may ask for.
const (
	MinMemoryMB    = 128
	MaxMemoryMB    = 10240
	MinTimeout     = time.Second
	MaxTimeout     = 900 * time.Second
	DefaultMemory  = 128
	DefaultTimeout = 3 * time.Second
	// MaxSyncPayload is Lambda's 6 MB limit for synchronous requests and responses.
	MaxSyncPayload = 6 << 20
	// MaxManifestBytes bounds each JSON document of an image: index.json,
	// a manifest or an index, an image config. The scheduler refuses an
	// upload with a larger one, amber deploy checks it before uploading,
	// and registry pulls refuse one.
	MaxManifestBytes = 4 << 20
)

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9-]{1,63}$`)
	digestRE = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)
	envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// ValidateName checks a function or agent name: [a-z0-9-]{1,63}.
func ValidateName(field, name string) error {
	if !nameRE.MatchString(name) {
		return Invalid(field, "%q must match [a-z0-9-]{1,63}", name)
	}
	return nil
}

// ValidateDigest checks an image digest of the form sha256:<64 hex>.
func ValidateDigest(field, d string) error {
	if !digestRE.MatchString(d) {
		return Invalid(field, "%q is not a sha256 digest", d)
	}
	return nil
}

// Validate checks every field of a spec and names the first bad one.
func (s *FunctionSpec) Validate() error {
	if err := ValidateName("name", s.Name); err != nil {
		return err
	}
	if err := ValidateImage("image", s.Image, true); err != nil {
		return err
	}
	if s.ImageRef != "" {
		if _, err := ParseImageRef(s.ImageRef); err != nil {
			return Invalid("image_ref", "%v", err)
		}
	}
	if s.MemoryMB < MinMemoryMB || s.MemoryMB > MaxMemoryMB {
		return Invalid("memory", "%d MB is outside %d–%d MB", s.MemoryMB, MinMemoryMB, MaxMemoryMB)
	}
	if t := time.Duration(s.Timeout); t < MinTimeout || t > MaxTimeout {
		return Invalid("timeout", "%s is outside 1s–900s", t)
	}
	for k, v := range s.Env {
		if !envKeyRE.MatchString(k) {
			return Invalid("env", "%q is not a valid variable name", k)
		}
		// A process environment is NUL-terminated strings: runc cannot start it.
		if strings.IndexByte(v, 0) >= 0 {
			return Invalid("env", "the value of %q contains a NUL byte", k)
		}
		if strings.HasPrefix(k, "AWS_LAMBDA_") || k == "_HANDLER" || k == "LAMBDA_TASK_ROOT" {
			return Invalid("env", "%q is reserved by the runtime", k)
		}
	}
	return nil
}
