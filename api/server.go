package api

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"time"
)

// Server defaults: what a load balancer in front would otherwise enforce.
const (
	// DefaultHeaderTimeout bounds how long a request's headers may take to
	// arrive, counted from its first byte (from the connection's start for
	// its first request).
	DefaultHeaderTimeout = 10 * time.Second
	// DefaultBodyTimeout bounds how long a request's headers and body
	// together may take to arrive. It does not bound the handler: once the
	// body has been read to its end the deadline is lifted, so a
	// synchronous invocation may run for its function's whole timeout.
	DefaultBodyTimeout = 60 * time.Second
	// DefaultIdleTimeout closes a keep-alive connection that sent no new
	// request for this long. It is longer than NewTransport's
	// IdleConnTimeout, so a client never reuses a connection the server is
	// closing.
	DefaultIdleTimeout = 60 * time.Second
	// DefaultMaxConns bounds the connections a server holds at once;
	// further ones wait in the listen backlog until one closes.
	DefaultMaxConns = 1024
)

// ServerConfig is what NewServer's options set.
type ServerConfig struct {
	HeaderTimeout time.Duration
	BodyTimeout   time.Duration
	IdleTimeout   time.Duration
	MaxConns      int
	ErrorLog      *log.Logger
}

// ServerOption configures NewServer.
type ServerOption func(*ServerConfig)

// WithHeaderTimeout sets how long a request's headers may take (default
// DefaultHeaderTimeout).
func WithHeaderTimeout(d time.Duration) ServerOption {
	return func(c *ServerConfig) { c.HeaderTimeout = d }
}

// WithBodyTimeout sets how long a request's headers and body may take
// (default DefaultBodyTimeout). A handler that expects a longer body (an
// image upload) extends its own deadline with http.ResponseController.
func WithBodyTimeout(d time.Duration) ServerOption {
	return func(c *ServerConfig) { c.BodyTimeout = d }
}

// WithIdleTimeout sets how long an idle keep-alive connection stays open
// (default DefaultIdleTimeout).
func WithIdleTimeout(d time.Duration) ServerOption {
	return func(c *ServerConfig) { c.IdleTimeout = d }
}

// WithMaxConns bounds the connections served at once (default
// DefaultMaxConns).
func WithMaxConns(n int) ServerOption { return func(c *ServerConfig) { c.MaxConns = n } }

// WithErrorLog sets where the server logs connection errors (default:
// the standard logger).
func WithErrorLog(l *log.Logger) ServerOption { return func(c *ServerConfig) { c.ErrorLog = l } }

// Server is an http.Server with amber's timeouts and a bound on
// concurrent connections. Create it with NewServer.
type Server struct {
	srv      *http.Server
	maxConns int
}

// NewServer returns a server for h. An option with a value that is not
// positive is refused with an error naming it (wrapping ErrInvalid).
func NewServer(h http.Handler, opts ...ServerOption) (*Server, error) {
	c := ServerConfig{
		HeaderTimeout: DefaultHeaderTimeout,
		BodyTimeout:   DefaultBodyTimeout,
		IdleTimeout:   DefaultIdleTimeout,
		MaxConns:      DefaultMaxConns,
	}
	for _, o := range opts {
		o(&c)
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{{"header-timeout", c.HeaderTimeout}, {"body-timeout", c.BodyTimeout}, {"idle-timeout", c.IdleTimeout}} {
		if d.d <= 0 {
			return nil, Invalid(d.name, "%s: want a duration above 0", d.d)
		}
	}
	if c.MaxConns < 1 {
		return nil, Invalid("max-conns", "%d: want at least 1", c.MaxConns)
	}
	return &Server{
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: c.HeaderTimeout,
			// ReadTimeout counts from the request's first byte and
			// covers headers and body. net/http lifts it once the body
			// is read to its end (its background read clears the
			// deadline), so it never cuts a long-running handler; no
			// WriteTimeout for the same reason.
			ReadTimeout: c.BodyTimeout,
			IdleTimeout: c.IdleTimeout,
			ErrorLog:    c.ErrorLog,
		},
		maxConns: c.MaxConns,
	}, nil
}

// Serve serves on ln, at most MaxConns connections at a time, until
// Shutdown or Close (http.ErrServerClosed).
func (s *Server) Serve(ln net.Listener) error {
	return s.srv.Serve(LimitListener(ln, s.maxConns))
}

// ServeTLS is Serve with TLS, from certFile and keyFile.
func (s *Server) ServeTLS(ln net.Listener, certFile, keyFile string) error {
	return s.srv.ServeTLS(LimitListener(ln, s.maxConns), certFile, keyFile)
}

// Shutdown stops the server gracefully (http.Server.Shutdown).
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// Close closes the listener and every connection at once.
func (s *Server) Close() error { return s.srv.Close() }

// LimitListener returns a listener that holds at most n accepted
// connections open at once: Accept waits while n are open, leaving further
// connections in the kernel's backlog. n must be at least 1.
func LimitListener(ln net.Listener, n int) net.Listener {
	if n < 1 {
		panic(fmt.Sprintf("api.LimitListener: n=%d, want at least 1", n))
	}
	return &limitListener{Listener: ln, slots: make(chan struct{}, n), closed: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	slots     chan struct{} // one value per open connection
	closed    chan struct{}
	closeOnce sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// limitConn gives its slot back on its first Close.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// ReadFrom keeps the connection's own ReadFrom (sendfile for a TCP
// connection) reachable through the wrapper.
func (c *limitConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(c.Conn, r)
}
