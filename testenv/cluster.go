// Package testenv brings up real parts for tests: a private containerd
// with its own root, state and socket, function images built from the
// examples, a whole cluster on loopback (internal/localcluster, which
// `amber up` runs too), fault injectors and the skip-or-fail rule of
// integration tests.
package testenv

import (
	"context"

	"github.com/amberfn/amber/internal/localcluster"
)

// The local cluster is localcluster's; these names keep the tests' spelling.
type (
	Cluster       = localcluster.Cluster
	ClusterConfig = localcluster.ClusterConfig
	Containerd    = localcluster.Containerd
	// SchedulerProcess is one `amber scheduler` process of a cluster with
	// several schedulers.
	SchedulerProcess = localcluster.SchedulerProcess
)

// AWSProfile is the profile in Cluster.AWSCredentialsFile.
const AWSProfile = localcluster.AWSProfile

// ErrPrerequisite reports that something the real parts need is missing.
var ErrPrerequisite = localcluster.ErrPrerequisite

// StartCluster brings up a cluster and returns once every agent has
// registered with the scheduler. Stop it with Stop.
func StartCluster(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	return localcluster.StartCluster(ctx, cfg)
}

// StartContainerd starts a private containerd under dir and waits until
// its socket answers. Stop it with Stop.
func StartContainerd(ctx context.Context, dir string) (*Containerd, error) {
	return localcluster.StartContainerd(ctx, dir)
}

// CheckContainerd reports what is missing for a private containerd: root,
// the containerd and runc binaries.
func CheckContainerd() error { return localcluster.CheckContainerd() }
