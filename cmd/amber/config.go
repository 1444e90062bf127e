package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
)

// Settings of `amber scheduler` and `amber agent` come from, in order of
// precedence: a flag on the command line, an environment variable
// AMBER_<FLAG> (upper case, "-" as "_": AMBER_KEEP_ALIVE), the
// configuration file, then the flag's default. The file is JSON with one
// object per command whose keys are the flag names:
//
//	{"agent": {"capacity": 8192, "keep-alive": "5m"}, "scheduler": {"listen": "0.0.0.0:7700"}}
//
// It is read from --config, else $AMBER_CONFIG, else /etc/amber/amber.json
// when that exists. An unknown key or a bad value stops the start with its
// name and the reason.
const defaultConfigFile = "/etc/amber/amber.json"

// configure applies environment variables and the configuration file to
// the flags of fs that were not set on the command line.
func configure(fs *flag.FlagSet, section, file string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	explicit := file != ""
	if file == "" {
		file = os.Getenv("AMBER_CONFIG")
		explicit = file != ""
	}
	if file == "" {
		file = defaultConfigFile
	}
	fromFile := map[string]json.RawMessage{}
	b, err := os.ReadFile(file)
	switch {
	case err == nil:
		var all map[string]map[string]json.RawMessage
		if err := json.Unmarshal(b, &all); err != nil {
			return fmt.Errorf("config %s: not a JSON object of sections: %v", file, err)
		}
		for name := range all {
			if name != "agent" && name != "scheduler" {
				return fmt.Errorf("config %s: %s: unknown section (want agent or scheduler)", file, name)
			}
		}
		fromFile = all[section]
	case explicit || !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("config: %w", err)
	}
	keys := make([]string, 0, len(fromFile))
	for k := range fromFile {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "config" || fs.Lookup(k) == nil {
			return fmt.Errorf("config %s: %s.%s: unknown setting (see amber %s -h)", file, section, k, section)
		}
	}
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || f.Name == "config" {
			return
		}
		env := "AMBER_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok && v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %v", env, v, err))
			}
			return
		}
		raw, ok := fromFile[f.Name]
		if !ok {
			return
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			errs = append(errs, fmt.Errorf("config %s: %s.%s: %v", file, section, f.Name, err))
			return
		}
		s := fmt.Sprint(v)
		if n, isNum := v.(float64); isNum && n == float64(int64(n)) {
			s = fmt.Sprint(int64(n))
		}
		if err := fs.Set(f.Name, s); err != nil {
			errs = append(errs, fmt.Errorf("config %s: %s.%s = %s: %v", file, section, f.Name, raw, err))
		}
	})
	return errors.Join(errs...)
}
