package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/pushd/pushd/fanout"
)

// Route is one entry of the admin route table.
type Route struct {
	// Pattern is a net/http ServeMux pattern with a method, such as
	// "GET /stats" or "POST /publish".
	Pattern string
	// Handler serves the route.
	Handler http.Handler
	// Public routes are served without the API key (only /livez and
	// /readyz are, see Server).
	Public bool
}

// Config configures a Server.
type Config struct {
	// Listen is the admin listen address (host:port; port 0 picks one).
	Listen string
	// APIKey, when not empty, is required on every route but /livez and
	// /readyz (and /metrics with OpenMetrics) as "Authorization: Bearer
	// <key>".
	APIKey string
	// OpenMetrics serves GET /metrics without the API key.
	OpenMetrics bool
	// Pprof serves /debug/pprof/ (without cmdline) and POST
	// /debug/freeosmemory.
	Pprof bool
	// Live and Ready back /livez and /readyz; nil Ready is always ready.
	// Ready returns "" when ready, else the reason served with 503.
	Ready func() string
	// Routes are the application's routes (stats, metrics, publish, the
	// server API). Patterns must carry a method and not collide with the
	// built-in ones.
	Routes []Route
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
}

// Server is the admin HTTP server.
type Server struct {
	cfg    Config
	routes []Route
	mux    *http.ServeMux
	srv    *http.Server
	ln     net.Listener
	log    *slog.Logger
	keySum [32]byte // sha256 of "Bearer <key>"; compared in constant time

	shutOnce sync.Once
}

// New builds the route table and opens the listener.
func New(cfg Config) (*Server, error) {
	if cfg.Listen == "" {
		return nil, fmt.Errorf("%w: Listen is required", ErrConfig)
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux(), log: cfg.Logger}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.APIKey != "" {
		s.keySum = sha256.Sum256([]byte("Bearer " + cfg.APIKey))
	}
	s.routes = append(s.routes,
		Route{Pattern: "GET /livez", Public: true, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "ok\n")
		})},
		Route{Pattern: "GET /readyz", Public: true, Handler: http.HandlerFunc(s.readyz)},
	)
	if cfg.Pprof {
		s.routes = append(s.routes, pprofRoutes()...)
	}
	for _, r := range cfg.Routes {
		if r.Public {
			return nil, fmt.Errorf("%w: route %q: only /livez and /readyz are public", ErrConfig, r.Pattern)
		}
		method, path, ok := strings.Cut(r.Pattern, " ")
		if !ok || method == "" || !strings.HasPrefix(path, "/") || r.Handler == nil {
			return nil, fmt.Errorf("%w: route %q needs \"METHOD /path\" and a handler", ErrConfig, r.Pattern)
		}
		if cfg.OpenMetrics && r.Pattern == "GET /metrics" {
			r.Public = true
		}
		s.routes = append(s.routes, r)
	}
	for _, r := range s.routes {
		if err := register(s.mux, r); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrListen, err)
	}
	s.ln = ln
	s.srv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	s.log.Info("listening", "kind", "admin", "addr", ln.Addr().String(), "api_key", cfg.APIKey != "", "pprof", cfg.Pprof, "open_metrics", cfg.OpenMetrics)
	return s, nil
}

// register adds r to mux; a conflicting pattern is a config error, not
// net/http's panic.
func register(mux *http.ServeMux, r Route) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("%w: route %q: %v", ErrConfig, r.Pattern, v)
		}
	}()
	mux.Handle(r.Pattern, r.Handler)
	return nil
}

// Routes returns the route table (the built-in routes first). Tests
// enumerate it to prove every non-public route needs the key.
func (s *Server) Routes() []Route { return append([]Route(nil), s.routes...) }

// Addr is the listener's address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Handler returns the route table behind the auth middleware.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serve) }

// serve is the auth middleware: it runs before routing, so 404s and 405s
// need the key too, and only a request that routes to a public route's
// exact pattern passes without it.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if s.cfg.APIKey != "" && !s.publicRequest(r) && !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="pushd admin"`)
		Error(w, http.StatusUnauthorized, CodeUnauthorized, "API key required (Authorization: Bearer <key>)")
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) publicRequest(r *http.Request) bool {
	_, pattern := s.mux.Handler(r)
	if pattern == "" {
		return false
	}
	for _, rt := range s.routes {
		if rt.Public && rt.Pattern == pattern {
			return true
		}
	}
	return false
}

// authorized compares the Authorization header with the key in constant
// time (both sides hashed first, so the lengths do not leak either).
func (s *Server) authorized(r *http.Request) bool {
	got := sha256.Sum256([]byte(r.Header.Get("Authorization")))
	return subtle.ConstantTimeCompare(got[:], s.keySum[:]) == 1
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if s.cfg.Ready != nil {
		if reason := s.cfg.Ready(); reason != "" {
			http.Error(w, reason, http.StatusServiceUnavailable)
			return
		}
	}
	_, _ = io.WriteString(w, "ok\n")
}

// pprofRoutes are the opt-in debugging routes. /debug/pprof/cmdline is
// deliberately absent: it would echo a key given as a flag.
func pprofRoutes() []Route {
	return []Route{
		{Pattern: "GET /debug/pprof/", Handler: http.HandlerFunc(pprof.Index)},
		{Pattern: "GET /debug/pprof/cmdline", Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			Error(w, http.StatusNotFound, CodeNotFound, "the command line is not served")
		})},
		{Pattern: "GET /debug/pprof/profile", Handler: http.HandlerFunc(pprof.Profile)},
		{Pattern: "GET /debug/pprof/symbol", Handler: http.HandlerFunc(pprof.Symbol)},
		{Pattern: "POST /debug/pprof/symbol", Handler: http.HandlerFunc(pprof.Symbol)},
		{Pattern: "GET /debug/pprof/trace", Handler: http.HandlerFunc(pprof.Trace)},
		{Pattern: "POST /debug/freeosmemory", Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			debug.FreeOSMemory()
			_, _ = io.WriteString(w, "ok\n")
		})},
	}
}

// Run serves until Shutdown or ctx ends.
func (s *Server) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { _ = s.Shutdown(context.Background()) })
	defer stop()
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin: %w", err)
	}
	return nil
}

// Shutdown stops the listener and waits for in-flight requests until ctx
// ends (then it returns ctx.Err()). Idempotent.
func (s *Server) Shutdown(ctx context.Context) error {
	var err error
	s.shutOnce.Do(func() {
		err = s.srv.Shutdown(ctx)
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			err = ctx.Err()
			_ = s.srv.Close()
		}
	})
	return err
}

// Error writes a JSON error body {"error":msg,"code":code}.
func Error(w http.ResponseWriter, status int, code Code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b := append([]byte(`{"error":`), fanout.AppendJSONString(nil, msg)...)
	b = append(b, `,"code":`...)
	b = fanout.AppendJSONString(b, string(code))
	_, _ = w.Write(append(b, "}\n"...))
}
