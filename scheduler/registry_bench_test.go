package scheduler

import (
	"fmt"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

// BenchmarkRegistryLatest measures what every invocation asks the
// registry: the function's latest version and its pool settings, over
// 1,000 deployed functions. The store must answer these from memory:
// go test -run '^$' -bench RegistryLatest ./scheduler
func BenchmarkRegistryLatest(b *testing.B) {
	s, err := New(WithDataDir(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const functions = 1000
	names := make([]string, functions)
	for i := range names {
		names[i] = fmt.Sprintf("fn-%04d", i)
		spec := api.FunctionSpec{Name: names[i], Image: "hello.tar", MemoryMB: 128, Timeout: api.Duration(3 * time.Second)}
		if _, _, err := s.reg.put(spec); err != nil {
			b.Fatal(err)
		}
	}
	sent := s.eng.Conn.Stats().OutMsgs
	b.ReportAllocs()
	b.ResetTimer()
	defer func() {
		if n := s.eng.Conn.Stats().OutMsgs - sent; n != 0 {
			b.Fatalf("the lookups sent %d messages to NATS; want none", n)
		}
	}()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			name := names[i%functions]
			i++
			if _, err := s.reg.latest(name); err != nil {
				b.Fatal(err)
			}
			if _, err := s.reg.pool(name); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDeploy measures storing a new version of a function on the
// embedded node: go test -run '^$' -bench Deploy ./scheduler
func BenchmarkDeploy(b *testing.B) {
	s, err := New(WithDataDir(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		spec := api.FunctionSpec{Name: "bench", Image: "hello.tar", MemoryMB: 128 + i%2, Timeout: api.Duration(3 * time.Second)}
		if _, created, err := s.reg.put(spec); err != nil || !created {
			b.Fatal(created, err)
		}
	}
}
