package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/amberfn/amber/scheduler"
)

// natsFlags say where `amber scheduler`'s engine, NATS JetStream, runs:
// an embedded node (the default), embedded and joined with the other
// schedulers' nodes, or an external NATS.
type natsFlags struct {
	listen, clusterListen, peers, name, fsync *string
	url, creds, ca, cert, key                 *string
}

func addNATSFlags(fs *flag.FlagSet) natsFlags {
	return natsFlags{
		listen:        fs.String("nats-listen", "", "client address of the embedded NATS node, host:port (default: a free loopback port)"),
		clusterListen: fs.String("cluster-listen", "", "cluster address of the embedded NATS node, host:port; with --cluster-peers joins the other schedulers"),
		peers:         fs.String("cluster-peers", "", "the other schedulers' --cluster-listen addresses, host:port,… (3 schedulers: replicas 3)"),
		name:          fs.String("nats-name", "", "the embedded node's server name, unique in the cluster (default: host name and data folder)"),
		fsync:         fs.String("nats-fsync", "", "when the embedded node fsyncs JetStream: always (every write) or interval (NATS's two minutes); default always alone, interval with --cluster-peers (a quorum of machines holds each write)"),
		url:           fs.String("nats", "", "use an external NATS instead of the embedded node: nats://host:4222[,nats://…]"),
		creds:         fs.String("nats-creds", "", "credentials file (.creds) for --nats"),
		ca:            fs.String("nats-ca", "", "CA bundle (PEM) that signs --nats servers' certificates"),
		cert:          fs.String("nats-cert", "", "client certificate (PEM) for --nats; with --nats-key"),
		key:           fs.String("nats-key", "", "client certificate's key (PEM) for --nats; with --nats-cert"),
	}
}

// config checks the flags together and returns the engine's
// configuration; a bad combination or value names the flag.
func (f natsFlags) config() (scheduler.NATSConfig, error) {
	cfg := scheduler.NATSConfig{}
	if *f.url != "" {
		for _, fv := range [][2]string{{"nats-listen", *f.listen}, {"cluster-listen", *f.clusterListen}, {"cluster-peers", *f.peers}, {"nats-name", *f.name}, {"nats-fsync", *f.fsync}} {
			if flagName, v := fv[0], fv[1]; v != "" {
				return cfg, fmt.Errorf("--%s configures the embedded NATS node; it cannot be combined with --nats (an external NATS)", flagName)
			}
		}
		for _, u := range strings.Split(*f.url, ",") {
			if err := checkNATSURL(strings.TrimSpace(u)); err != nil {
				return cfg, fmt.Errorf("--nats %q: %w", *f.url, err)
			}
		}
		if (*f.cert == "") != (*f.key == "") {
			return cfg, errors.New("--nats-cert and --nats-key go together: give both or neither")
		}
		for _, fv := range f.clientFiles() {
			flagName, p := fv[0], fv[1]
			if p == "" {
				continue
			}
			if _, err := os.Stat(p); err != nil {
				return cfg, fmt.Errorf("--%s: %w", flagName, err)
			}
		}
		cfg.URL, cfg.Credentials, cfg.CA, cfg.Cert, cfg.Key = *f.url, *f.creds, *f.ca, *f.cert, *f.key
		return cfg, nil
	}
	for _, fv := range f.clientFiles() {
		if flagName, v := fv[0], fv[1]; v != "" {
			return cfg, fmt.Errorf("--%s configures the connection to an external NATS: it needs --nats", flagName)
		}
	}
	if *f.listen != "" {
		if err := checkHostPort(*f.listen); err != nil {
			return cfg, fmt.Errorf("--nats-listen: %w", err)
		}
	}
	if *f.clusterListen != "" {
		if err := checkHostPort(*f.clusterListen); err != nil {
			return cfg, fmt.Errorf("--cluster-listen: %w", err)
		}
	}
	var peers []string
	for _, p := range strings.Split(*f.peers, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if err := checkHostPort(p); err != nil {
			return cfg, fmt.Errorf("--cluster-peers: %w", err)
		}
		if p == *f.clusterListen {
			return cfg, fmt.Errorf("--cluster-peers: %s is this node's own --cluster-listen; list the other schedulers", p)
		}
		peers = append(peers, p)
	}
	if len(peers) > 0 && *f.clusterListen == "" {
		return cfg, errors.New("--cluster-peers needs --cluster-listen: the address the other schedulers reach this node at")
	}
	if *f.name != "" && strings.ContainsAny(*f.name, " \t\n.*>") {
		return cfg, fmt.Errorf("--nats-name %q: no spaces, dots, * or >", *f.name)
	}
	if v := *f.fsync; v != "" && v != scheduler.FsyncAlways && v != scheduler.FsyncInterval {
		return cfg, fmt.Errorf("--nats-fsync %q: want %s or %s", v, scheduler.FsyncAlways, scheduler.FsyncInterval)
	}
	cfg.Listen, cfg.ClusterListen, cfg.Peers, cfg.Name, cfg.Fsync = *f.listen, *f.clusterListen, peers, *f.name, *f.fsync
	return cfg, nil
}

// clientFiles are the external NATS connection's files, flag and value.
func (f natsFlags) clientFiles() [][2]string {
	return [][2]string{{"nats-creds", *f.creds}, {"nats-ca", *f.ca}, {"nats-cert", *f.cert}, {"nats-key", *f.key}}
}

func checkHostPort(addr string) error {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want host:port", addr)
	}
	if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %q: want 1–65535", addr, p)
	}
	return nil
}

func checkNATSURL(u string) error {
	pu, err := url.Parse(u)
	if err != nil {
		return err
	}
	switch pu.Scheme {
	case "nats", "tls", "ws", "wss":
	default:
		return fmt.Errorf("%q: want nats://host:port (or tls://, ws://, wss://)", u)
	}
	if pu.Host == "" {
		return fmt.Errorf("%q: no host", u)
	}
	return nil
}
