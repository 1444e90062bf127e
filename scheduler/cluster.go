package scheduler

// Several schedulers, one control plane: what they share besides the
// engine's buckets and streams.
//
// Membership. An agent heartbeats over HTTP to one scheduler; that one
// applies it and publishes it on amber.agents.heartbeat.<agent> with its
// own id in the Amber-Origin header. Every scheduler subscribes and
// applies the heartbeats others published (its own it has applied
// already), so each one knows every agent and places on its own view.
// Reservations and "unreachable" marks stay local to the scheduler that
// made them: the agent is the authority on its capacity.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/scheduler/internal/engine"
)

// HeartbeatSubject prefixes the subjects agents' heartbeats are shared on
// (HeartbeatSubject + "." + agent name).
const HeartbeatSubject = "amber.agents.heartbeat"

// headerOrigin carries the id of the scheduler that published a message.
const headerOrigin = "Amber-Origin"

// newSchedulerID names one scheduler process.
func newSchedulerID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// heartbeatBus shares agents' heartbeats among the schedulers over NATS.
type heartbeatBus struct {
	nc     *nats.Conn
	origin string
	sub    *nats.Subscription
	log    *slog.Logger
}

// startHeartbeatBus subscribes to the heartbeats other schedulers publish
// and hands each to apply.
func startHeartbeatBus(nc *nats.Conn, origin string, apply func(api.Heartbeat) error, log *slog.Logger) (*heartbeatBus, error) {
	b := &heartbeatBus{nc: nc, origin: origin, log: log}
	sub, err := nc.Subscribe(HeartbeatSubject+".*", func(m *nats.Msg) {
		if m.Header.Get(headerOrigin) == origin {
			return // applied when it arrived over HTTP
		}
		var hb api.Heartbeat
		if err := json.Unmarshal(m.Data, &hb); err != nil {
			log.Warn("bad shared heartbeat", "subject", m.Subject, "from", m.Header.Get(headerOrigin), "err", err.Error())
			return
		}
		if err := apply(hb); err != nil {
			log.Warn("shared heartbeat refused", "agent", hb.Name, "from", m.Header.Get(headerOrigin), "err", err.Error())
		}
	})
	if err != nil {
		return nil, engine.Wrap(fmt.Errorf("subscribe to %s: %w", HeartbeatSubject, err))
	}
	// Heartbeats come once a second per agent: many agents must not make
	// the client drop them as a slow consumer.
	_ = sub.SetPendingLimits(64<<10, 256<<20)
	b.sub = sub
	return b, nil
}

// publish shares a heartbeat this scheduler received. It does not wait:
// a NATS that is down loses the message, and the agent's next heartbeat
// (a second later) carries the same news.
func (b *heartbeatBus) publish(hb api.Heartbeat) {
	data, err := json.Marshal(hb)
	if err != nil {
		return
	}
	m := &nats.Msg{Subject: HeartbeatSubject + "." + hb.Name, Data: data, Header: nats.Header{}}
	m.Header.Set(headerOrigin, b.origin)
	if err := b.nc.PublishMsg(m); err != nil {
		b.log.Debug("share heartbeat", "agent", hb.Name, "err", err.Error())
	}
}

func (b *heartbeatBus) stop() {
	if b != nil && b.sub != nil {
		_ = b.sub.Unsubscribe()
	}
}

// ControlPlane reports this scheduler's view of the engine.
func (s *Scheduler) ControlPlane(ctx context.Context) (*api.ControlPlane, error) {
	h, err := s.eng.Health(ctx)
	if err != nil {
		return nil, fmt.Errorf("control plane engine: %w", err)
	}
	out := &api.ControlPlane{
		Scheduler: s.id, Embedded: h.Embedded, Server: h.Server, Cluster: h.Cluster,
		MetaLeader: h.MetaLeader, Peers: h.Peers, OfflinePeers: h.Offline,
		Replicas: s.eng.Replicas(), Streams: h.Streams, Bytes: h.Bytes,
	}
	if out.OfflinePeers == nil {
		out.OfflinePeers = []string{}
	}
	return out, nil
}

// handleCluster serves GET /v1/cluster: api.ControlPlane, or 503 naming
// why the engine does not answer.
func (s *Scheduler) handleCluster(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	cp, err := s.ControlPlane(ctx)
	if err != nil {
		api.WriteError(w, fmt.Errorf("%w: %w", err, api.ErrUnavailable))
		return
	}
	api.WriteJSON(w, http.StatusOK, cp)
}

// jetstreamMetrics are the engine's figures for /metrics: every stream's
// messages and bytes, every consumer's pending and ack-pending counts.
// When JetStream does not answer, amber_jetstream_up is 0 and the rest
// have no samples.
func (s *Scheduler) jetstreamMetrics(ctx context.Context) []*metricFamily {
	fam := func(name, typ, help string) *metricFamily {
		return &metricFamily{name: name, typ: typ, help: help}
	}
	var (
		up         = fam("amber_jetstream_up", "gauge", "1 when JetStream answers this scheduler, else 0.")
		metaLeader = fam("amber_jetstream_meta_leader", "gauge", "1 when the JetStream cluster has a meta leader (a quorum), else 0.")
		msgs       = fam("amber_jetstream_stream_messages", "gauge", "Messages in the stream (for a bucket, its keys' history).")
		bytes      = fam("amber_jetstream_stream_bytes", "gauge", "Bytes the stream stores.")
		pending    = fam("amber_jetstream_consumer_pending", "gauge", "Messages not yet delivered to the consumer (its lag).")
		ackPending = fam("amber_jetstream_consumer_ack_pending", "gauge", "Messages delivered to the consumer and not yet acknowledged.")
	)
	all := []*metricFamily{up, metaLeader, msgs, bytes, pending, ackPending}
	one := func(f *metricFamily, v float64, l ...[2]string) {
		f.samples = append(f.samples, metricSample{l, v})
	}
	h, err := s.eng.Health(ctx)
	if err != nil {
		one(up, 0)
		s.log.Debug("metrics: JetStream", "err", err.Error())
		return all
	}
	one(up, 1)
	leader := 0.0
	if h.MetaLeader != "" {
		leader = 1
	}
	one(metaLeader, leader)
	streams := s.eng.JS.ListStreams(ctx)
	for si := range streams.Info() {
		sl := [2]string{"stream", si.Config.Name}
		one(msgs, float64(si.State.Msgs), sl)
		one(bytes, float64(si.State.Bytes), sl)
		if si.State.Consumers == 0 {
			continue
		}
		st, err := s.eng.JS.Stream(ctx, si.Config.Name)
		if err != nil {
			continue
		}
		cons := st.ListConsumers(ctx)
		for ci := range cons.Info() {
			if ci.Config.Durable == "" {
				continue // watchers and other short-lived consumers
			}
			l := [][2]string{sl, {"consumer", ci.Name}}
			pending.samples = append(pending.samples, metricSample{l, float64(ci.NumPending)})
			ackPending.samples = append(ackPending.samples, metricSample{l, float64(ci.NumAckPending)})
		}
	}
	if err := streams.Err(); err != nil {
		s.log.Debug("metrics: list streams", "err", err.Error())
	}
	return all
}

// AccessKeyFile is the data folder's file with the Lambda endpoint's
// access key (sigv4.go). Schedulers of one control plane must share it
// until the key lives in the engine: copy it into every data folder.
const AccessKeyFile = accessKeyFile

// LoadOrCreateAccessKey reads the data folder's access key, making one
// when there is none (as New does).
func LoadOrCreateAccessKey(dir string) (AccessKey, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return AccessKey{}, err
	}
	k, err := loadAccessKey(dir)
	if err != nil {
		return AccessKey{}, err
	}
	return *k, nil
}
