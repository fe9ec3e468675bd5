package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/pushd/pushd/auth"
	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/fanout"
	"github.com/pushd/pushd/poller"
	"github.com/pushd/pushd/protocol"
)

// Config is pushd's whole configuration. Precedence: defaults < the
// -config file (YAML, keys are the flag names) < PUSHD_* environment <
// flags.
type Config struct {
	Listen      string
	AdminListen string
	Echo        bool
	ReusePort   bool
	CheckConfig bool
	PrintConfig bool
	Version     bool
	ConfigFile  string

	// Drain on SIGTERM/SIGINT (drain.go).
	DrainDelay      time.Duration
	DrainDuration   time.Duration
	DrainRestart    bool
	ReconnectJitter time.Duration

	// permessage-deflate (deflate.go).
	DeflateChannels string
	DeflateMinSize  int
	DeflateLevel    int

	MaxFrame         int64
	MaxMessage       int64
	MaxHeaderBytes   int
	MaxPending       int
	MaxConns         int64
	HandshakeTimeout time.Duration
	PingInterval     time.Duration
	PongTimeout      time.Duration
	CloseTimeout     time.Duration
	WriteTimeout     time.Duration
	ShutdownTimeout  time.Duration

	Poller      string
	Loops       int
	Workers     int
	ReadBuffer  int
	LinkNodeCap int

	LogFormat string
	LogLevel  string

	// pushd.v1 (everything below is unused with -echo).
	Public           string
	Policy           string
	HistorySize      int
	HistoryTTL       time.Duration
	ChunkSize        int
	MaxPublishBytes  int64
	MaxSubscriptions int

	// Redis broker (all three empty: the embedded memory broker) and how
	// to reach it (redisconf.go).
	Redis                     string
	RedisCluster              string
	RedisSentinel             string
	RedisUsername             string
	RedisPassword             string
	RedisPasswordFile         string
	RedisSentinelPassword     string
	RedisSentinelPasswordFile string
	RedisTLS                  bool
	RedisTLSCA                string
	RedisTLSCert              string
	RedisTLSKey               string
	RedisTLSServerName        string
	// The Redis ingest (cluster.RedisConfig PubSubConns, Ingest*).
	RedisPubSubConns        int
	RedisIngestChannelBytes int
	RedisIngestNodeBytes    int64

	// Security (security.go): tokens, Origin, admission, wss.
	JWTHS256Secret     string
	JWTHS256SecretFile string
	JWTPublicKey       string
	JWTAud             string
	JWTIss             string
	JWTLeeway          time.Duration
	AuthRequired       bool
	AllowedOrigins     string
	AllowNoOrigin      bool
	MaxConnsPerIP      int
	ConnectRate        float64
	ConnectBurst       int
	MaxMessageRate     float64
	MaxMessageBurst    int
	TLSListen          string
	TLSCert            string
	TLSKey             string
	TLSMinVersion      string
	JWTJWKSURL         string
	JWTJWKSRefresh     time.Duration
	AdminAPIKey        string
	AdminAPIKeyFile    string
	AdminMetricsOpen   bool
	AdminPprof         bool

	// Presence (presence.go).
	Presence          string
	PresenceEvents    string
	PresenceHeartbeat time.Duration
	PresenceGrace     time.Duration
	PresenceEventRate float64

	// Demo serves the QR-login demo and the JS client on -listen (demo.go).
	Demo bool

	// flags is the parsed FlagSet (-print-config walks it).
	flags *flag.FlagSet

	// Parsed from Public, Policy and the Redis flags by validate.
	publicSet      bool // -public or PUSHD_PUBLIC was given
	publicPatterns []string
	policyRules    []fanout.PolicyRule
	redis          *redisConn // nil: the memory broker
	// presencePatterns and presenceEventPatterns are parsed from Presence
	// and PresenceEvents.
	presencePatterns      []string
	presenceEventPatterns []string
	adminKey              string     // AdminAPIKey, or read from AdminAPIKeyFile
	jwks                  *auth.JWKS // the running -jwt-jwks-url source (newPushApp); nil in validation
	// Parsed from DeflateChannels by validateDeflate.
	deflatePatterns []string
}

// parseConfig builds the Config from the defaults, the -config file (or
// PUSHD_CONFIG), the environment (lookup is os.LookupEnv outside tests)
// and the flags, each overriding the one before. It reports every invalid
// value at once.
func parseConfig(args []string, lookup func(string) (string, bool), stderr io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("pushd", flag.ContinueOnError)
	c.flags = fs
	fs.SetOutput(stderr)
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:8080", "WebSocket (public HTTP) listen address")
	fs.StringVar(&c.AdminListen, "admin-listen", "127.0.0.1:9090", "admin HTTP listen address (/livez, /readyz, /metrics, /stats, POST /publish, the server API; /debug/pprof/ with -admin-pprof)")
	fs.BoolVar(&c.Echo, "echo", false, "conformance mode: echo every data message back unchanged")
	fs.BoolVar(&c.ReusePort, "reuseport", false, "set SO_REUSEPORT so several pushd processes share -listen")
	fs.BoolVar(&c.CheckConfig, "check-config", false, "validate the configuration and exit (0 valid, 2 invalid)")
	fs.BoolVar(&c.PrintConfig, "print-config", false, "print the effective configuration as a config file (secrets redacted) and exit")
	fs.BoolVar(&c.Version, "version", false, "print the version, VCS revision and Go version of this build and exit")
	fs.StringVar(&c.ConfigFile, "config", "", "YAML config file; keys are the flag names (max-frame: 1048576); PUSHD_* and flags override it")
	fs.Int64Var(&c.MaxFrame, "max-frame", poller.DefaultMaxFrameSize, "max inbound frame payload in bytes (close 1009 above)")
	fs.Int64Var(&c.MaxMessage, "max-message", poller.DefaultMaxMessageSize, "max inbound message size in bytes (close 1009 above)")
	fs.IntVar(&c.MaxHeaderBytes, "max-header-bytes", poller.DefaultMaxHeaderBytes, "max size of the HTTP upgrade request (431 above)")
	fs.IntVar(&c.MaxPending, "max-pending", poller.DefaultMaxPendingBytes, "max bytes queued for one connection (slow consumer above)")
	fs.Int64Var(&c.MaxConns, "max-conns", 0, "max connections (0: RLIMIT_NOFILE minus headroom); above it clients get 503")
	fs.DurationVar(&c.HandshakeTimeout, "handshake-timeout", poller.DefaultHandshakeTimeout, "close connections that do not finish the upgrade in time")
	fs.DurationVar(&c.PingInterval, "ping-interval", poller.DefaultPingInterval, "ping connections silent for this long")
	fs.DurationVar(&c.PongTimeout, "pong-timeout", poller.DefaultPongTimeout, "close connections still silent this long after a ping")
	fs.DurationVar(&c.CloseTimeout, "close-timeout", poller.DefaultCloseTimeout, "wait this long for the peer's close frame before closing TCP")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", poller.DefaultWriteTimeout, "close connections whose socket stays full this long")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "bound on the graceful shutdown after SIGINT/SIGTERM")
	fs.StringVar(&c.Poller, "poller", poller.DefaultBackend, "event loop backend: lean (pushd's own epoll loops, ~0.5 KiB per idle connection) or netpoll (cloudwego/netpoll)")
	fs.IntVar(&c.Loops, "loops", 0, "event loops (0: the backend's default: lean GOMAXPROCS/4, netpoll GOMAXPROCS/20+1; at least 1)")
	fs.IntVar(&c.Workers, "workers", 256, "size of the worker pool that runs connection handlers")
	fs.IntVar(&c.ReadBuffer, "read-buffer", 512, "initial per-connection read buffer in bytes (netpoll BufferSize)")
	fs.IntVar(&c.LinkNodeCap, "link-node-cap", 512, "minimum netpoll buffer node size in bytes (netpoll LinkBufferCap)")
	fs.StringVar(&c.LogFormat, "log-format", "auto", "log format: auto (text on a terminal, else json), json or text")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.Public, "public", "*", "comma-separated channel patterns anyone may subscribe to ('*' any run of characters, '?' one); empty: none")
	fs.StringVar(&c.Policy, "policy", "", "slow-consumer policies per channel pattern, first match wins, e.g. 'game:*=conflate,feed:*=drop' (default for the rest: disconnect with 4001)")
	fs.IntVar(&c.HistorySize, "history-size", cluster.DefaultHistorySize, "publications kept per channel for since-recovery (0: none)")
	fs.DurationVar(&c.HistoryTTL, "history-ttl", cluster.DefaultHistoryTTL, "how long a publication is kept for since-recovery")
	fs.IntVar(&c.ChunkSize, "chunk-size", fanout.DefaultChunkSize, "smallest fan-out task in subscribers: larger channels fan out on the worker pool in at most 2×GOMAXPROCS chunks")
	fs.Int64Var(&c.MaxPublishBytes, "max-publish-bytes", 1<<20, "max body of POST /publish in bytes (413 above)")
	fs.IntVar(&c.MaxSubscriptions, "max-subscriptions", protocol.DefaultMaxSubscriptions, "max subscriptions per connection (err 429 above)")
	fs.StringVar(&c.Redis, "redis", "", "standalone Redis URL, e.g. redis://127.0.0.1:6379/0: nodes share channels through Redis pub/sub (empty: embedded memory broker)")
	fs.StringVar(&c.RedisCluster, "redis-cluster", "", "comma-separated Redis Cluster seed addresses host:port,...: sharded pub/sub (SSUBSCRIBE/SPUBLISH)")
	fs.IntVar(&c.RedisPubSubConns, "redis-pubsub-conns", cluster.DefaultPubSubConns, "Redis pub/sub connections (per primary with -redis-cluster); channels are spread over them by hash, so a broken one touches only its share")
	fs.IntVar(&c.RedisIngestChannelBytes, "redis-ingest-channel-bytes", cluster.DefaultIngestChannelBytes, "bytes one channel may have waiting between the Redis reader and delivery; past it the channel sheds (drop + gap notice, or conflate by -policy), counted")
	fs.Int64Var(&c.RedisIngestNodeBytes, "redis-ingest-node-bytes", cluster.DefaultIngestNodeBytes, "bytes all channels together may have waiting between the Redis readers and delivery; past it busy channels shed (quiet ones never)")
	redisFlags(fs, &c)
	securityFlags(fs, &c)
	drainFlags(fs, &c)
	deflateFlags(fs, &c)
	demoFlags(fs, &c)
	presenceFlags(fs, &c)

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, fmt.Errorf("%w: %w: %w", errUsage, errFlagSyntax, err)
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	errs := c.applyFileAndEnv(fs, set, lookup)
	errs = append(errs, c.validate()...)
	if len(errs) > 0 {
		return c, fmt.Errorf("%w: invalid configuration:\n  %w", errUsage, errors.Join(errs...))
	}
	return c, nil
}

// applyFileAndEnv fills every flag not on the command line (set) from the
// config file (-config, else PUSHD_CONFIG), then from the environment,
// which overrides the file. It returns every error found.
func (c *Config) applyFileAndEnv(fs *flag.FlagSet, set map[string]bool, lookup func(string) (string, bool)) []error {
	var errs []error
	if !set["config"] {
		if v, ok := lookup(envKey("config")); ok {
			c.ConfigFile = v
		}
	}
	fileKeys := map[string]bool{}
	if c.ConfigFile != "" {
		var ferrs []error
		fileKeys, ferrs = applyConfigFile(fs, c.ConfigFile, set)
		errs = append(errs, ferrs...)
	}
	_, envPublic := lookup(envKey("public"))
	c.publicSet = set["public"] || envPublic || fileKeys["public"]
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || f.Name == "config" || notEnvKey(f.Name) {
			return
		}
		key := envKey(f.Name)
		if v, ok := lookup(key); ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", key, v, err))
			}
		}
	})
	return errs
}

// splitList splits a comma-separated flag value, dropping empty items and
// surrounding spaces.
func splitList(v string) []string {
	out := []string{}
	for item := range strings.SplitSeq(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// envKey maps a flag name to its environment variable: max-frame → PUSHD_MAX_FRAME.
func envKey(flagName string) string {
	return "PUSHD_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func (c *Config) validate() []error {
	var errs []error
	c.publicPatterns = splitList(c.Public)
	for _, p := range c.publicPatterns {
		if protocol.ValidChannel(strings.NewReplacer("*", "x", "?", "x").Replace(p)) != nil {
			errs = append(errs, fmt.Errorf("-public: bad pattern %q (printable ASCII, no spaces or commas)", p))
		}
	}
	c.policyRules = nil
	for _, item := range splitList(c.Policy) {
		pat, name, ok := strings.Cut(item, "=")
		pol, err := fanout.ParsePolicy(name)
		if !ok || pat == "" || err != nil {
			errs = append(errs, fmt.Errorf("-policy: bad rule %q (want pattern=disconnect|drop|conflate)", item))
			continue
		}
		c.policyRules = append(c.policyRules, fanout.PolicyRule{Pattern: pat, Policy: pol})
	}
	if c.HistorySize < 0 {
		errs = append(errs, fmt.Errorf("-history-size must not be negative (got %d)", c.HistorySize))
	}
	if c.HistoryTTL <= 0 {
		errs = append(errs, fmt.Errorf("-history-ttl must be positive (got %v)", c.HistoryTTL))
	}
	if c.ChunkSize < 1 {
		errs = append(errs, fmt.Errorf("-chunk-size must be at least 1 (got %d)", c.ChunkSize))
	}
	if c.MaxPublishBytes < 1 {
		errs = append(errs, fmt.Errorf("-max-publish-bytes must be at least 1 (got %d)", c.MaxPublishBytes))
	}
	if c.MaxSubscriptions < 1 {
		errs = append(errs, fmt.Errorf("-max-subscriptions must be at least 1 (got %d)", c.MaxSubscriptions))
	}
	errs = append(errs, c.validateRedis()...)
	errs = append(errs, c.validateSecurity()...)
	errs = append(errs, c.validatePresence()...)
	if c.Listen == "" {
		errs = append(errs, errors.New("-listen must not be empty"))
	}
	if c.AdminListen == "" {
		errs = append(errs, errors.New("-admin-listen must not be empty"))
	}
	if c.Workers < 1 {
		errs = append(errs, fmt.Errorf("-workers must be at least 1 (got %d)", c.Workers))
	}
	if c.ReadBuffer < 256 {
		errs = append(errs, fmt.Errorf("-read-buffer must be at least 256 (got %d)", c.ReadBuffer))
	}
	if c.LinkNodeCap < 256 {
		errs = append(errs, fmt.Errorf("-link-node-cap must be at least 256 (got %d)", c.LinkNodeCap))
	}
	if c.Loops < 0 {
		errs = append(errs, fmt.Errorf("-loops must not be negative (got %d)", c.Loops))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("-shutdown-timeout must be positive (got %v)", c.ShutdownTimeout))
	}
	errs = append(errs, c.validateDrain()...)
	errs = append(errs, c.validateDeflate()...)
	switch c.LogFormat {
	case "auto", "json", "text":
	default:
		errs = append(errs, fmt.Errorf("-log-format must be auto, json or text (got %q)", c.LogFormat))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("-log-level must be debug, info, warn or error (got %q)", c.LogLevel))
	}
	if err := c.pollerConfig(nil).Validate(); err != nil {
		errs = append(errs, err)
	}
	return errs
}
