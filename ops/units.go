// Package ops holds what running amber as a service needs: systemd units
// and the node checks behind `amber doctor`.
package ops

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"text/template"
)

// Unit is one file `amber install` writes.
type Unit struct {
	Path    string
	Content string
}

// Role is what a node runs.
type Role string

const (
	RoleAgent     Role = "agent"
	RoleScheduler Role = "scheduler"
)

// UnitConfig says where things live.
type UnitConfig struct {
	Binary  string // absolute path of the amber binary
	EnvDir  string // where the environment files go (default /etc/amber)
	UnitDir string // where units go (default /etc/systemd/system)
	DataDir string // default /var/lib/amber
	// Cluster, for a scheduler, joins it with the other schedulers of a
	// control plane (each embeds a NATS node): written to its environment
	// file as AMBER_SCHEDULER_ARGS, which the unit passes on.
	Cluster *SchedulerCluster
}

// SchedulerCluster is where one scheduler of a several-node control plane
// listens and which peers it joins.
type SchedulerCluster struct {
	Listen        string   // HTTP API (host:port)
	ClusterListen string   // this node's NATS cluster address (host:port)
	Peers         []string // the other schedulers' cluster addresses
	Name          string   // unique node name (default: host name)
}

// Args are the scheduler flags of c.
func (c *SchedulerCluster) Args() ([]string, error) {
	check := func(flag, v string) error {
		h, p, err := net.SplitHostPort(v)
		if err != nil || p == "" || strings.ContainsAny(h+p, " \t\"'$") {
			return fmt.Errorf("%s %q: want host:port", flag, v)
		}
		return nil
	}
	if c.ClusterListen == "" {
		return nil, errors.New("--cluster-listen: a scheduler of a cluster needs its own cluster address")
	}
	if len(c.Peers) < 2 {
		return nil, fmt.Errorf("--cluster-peers %q: a control plane that survives the loss of one scheduler needs at least three, so name the two (or more) others", strings.Join(c.Peers, ","))
	}
	args := []string{}
	if c.Listen != "" {
		if err := check("--listen", c.Listen); err != nil {
			return nil, err
		}
		args = append(args, "--listen", c.Listen)
	}
	if err := check("--cluster-listen", c.ClusterListen); err != nil {
		return nil, err
	}
	for _, p := range c.Peers {
		if err := check("--cluster-peers", p); err != nil {
			return nil, err
		}
		if p == c.ClusterListen {
			return nil, fmt.Errorf("--cluster-peers %q: lists this node's own cluster address", p)
		}
	}
	args = append(args, "--cluster-listen", c.ClusterListen, "--cluster-peers", strings.Join(c.Peers, ","))
	if c.Name != "" {
		if strings.ContainsAny(c.Name, " \t\"'$") {
			return nil, fmt.Errorf("--name %q: no spaces or quotes", c.Name)
		}
		args = append(args, "--nats-name", c.Name)
	}
	return args, nil
}

func (c *UnitConfig) defaults() {
	if c.EnvDir == "" {
		c.EnvDir = "/etc/amber"
	}
	if c.UnitDir == "" {
		c.UnitDir = "/etc/systemd/system"
	}
	if c.DataDir == "" {
		c.DataDir = "/var/lib/amber"
	}
}

// The agent needs root for containerd, mounts and network namespaces, so
// its hardening is what does not get in the way of that; the scheduler
// runs as a dynamic user with the filesystem read-only but its state.
var unitTemplates = map[Role]string{
	RoleAgent: `[Unit]
Description=amber agent: runs function instances on this node
Documentation=https://github.com/amberfn/amber
After=network-online.target containerd.service
Wants=network-online.target
Requires=containerd.service

[Service]
Type=notify
NotifyAccess=main
EnvironmentFile=-{{.EnvDir}}/agent.env
ExecStart={{.Binary}} agent --state {{.DataDir}}/agent
Restart=on-failure
RestartSec=2s
TimeoutStopSec=60s
KillMode=mixed
Delegate=yes
LimitNOFILE=1048576
NoNewPrivileges=yes
ProtectHome=yes
ProtectClock=yes
ProtectKernelLogs=yes
RestrictRealtime=yes
LockPersonality=yes
StateDirectory=amber/agent

[Install]
WantedBy=multi-user.target
`,
	RoleScheduler: `[Unit]
Description=amber scheduler: registry, placement, gateway and ledger
Documentation=https://github.com/amberfn/amber
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
EnvironmentFile=-{{.EnvDir}}/scheduler.env
ExecStart={{.Binary}} scheduler --data {{.DataDir}}/scheduler $AMBER_SCHEDULER_ARGS
Restart=on-failure
RestartSec=2s
TimeoutStopSec=30s
DynamicUser=yes
StateDirectory=amber/scheduler
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
CapabilityBoundingSet=
AmbientCapabilities=
SystemCallArchitectures=native
SystemCallFilter=@system-service
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX

[Install]
WantedBy=multi-user.target
`,
}

// envTemplates are the environment files, written only when missing.
var envTemplates = map[Role]string{
	RoleAgent: "# amber agent settings (flags override, see `amber agent -h`)\n#AMBER_SCHEDULER=http://scheduler:7700\n#AMBER_TOKEN=\n#AMBER_LOG=info\n",
	RoleScheduler: "# amber scheduler settings (flags override, see `amber scheduler -h`)\n#AMBER_TOKEN=\n#AMBER_LOG=info\n" +
		"# One of three schedulers (each embeds a NATS node; see the README's control plane section):\n" +
		"#AMBER_SCHEDULER_ARGS=--listen :7700 --cluster-listen 10.0.0.1:6222 --cluster-peers 10.0.0.2:6222,10.0.0.3:6222\n",
}

// Units renders the unit and environment file of a role.
func Units(role Role, cfg UnitConfig) ([]Unit, error) {
	cfg.defaults()
	tpl, ok := unitTemplates[role]
	if !ok {
		return nil, fmt.Errorf("role %q: want agent or scheduler", role)
	}
	if !filepath.IsAbs(cfg.Binary) {
		return nil, fmt.Errorf("binary %q: want an absolute path", cfg.Binary)
	}
	var b bytes.Buffer
	if err := template.Must(template.New("unit").Parse(tpl)).Execute(&b, cfg); err != nil {
		return nil, err
	}
	env := envTemplates[role]
	if cfg.Cluster != nil {
		if role != RoleScheduler {
			return nil, fmt.Errorf("cluster settings are for a scheduler, not an %s", role)
		}
		args, err := cfg.Cluster.Args()
		if err != nil {
			return nil, err
		}
		env += "AMBER_SCHEDULER_ARGS=" + strings.Join(args, " ") + "\n"
	}
	return []Unit{
		{Path: filepath.Join(cfg.UnitDir, "amber-"+string(role)+".service"), Content: b.String()},
		{Path: filepath.Join(cfg.EnvDir, string(role)+".env"), Content: env},
	}, nil
}
