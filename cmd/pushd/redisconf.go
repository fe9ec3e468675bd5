package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisFlags registers how pushd reaches Redis beyond -redis and
// -redis-cluster: Sentinel, ACL credentials and TLS, alike for the three
// deployments.
func redisFlags(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.RedisSentinel, "redis-sentinel", "", "Redis Sentinel: master@host:port,host:port,... (the master name, then sentinel addresses); pushd follows the primary Sentinel promotes")
	fs.StringVar(&c.RedisUsername, "redis-username", "", "Redis ACL user (AUTH <user> <password>) for -redis, -redis-sentinel's primaries and -redis-cluster (empty: the default user)")
	fs.StringVar(&c.RedisPassword, "redis-password", "", "Redis password (requirepass, or the ACL user's); prefer -redis-password-file or PUSHD_REDIS_PASSWORD")
	fs.StringVar(&c.RedisPasswordFile, "redis-password-file", "", "file holding the Redis password (trailing newline ignored)")
	fs.StringVar(&c.RedisSentinelPassword, "redis-sentinel-password", "", "password of the sentinels themselves (their requirepass), if any; prefer -redis-sentinel-password-file or PUSHD_REDIS_SENTINEL_PASSWORD")
	fs.StringVar(&c.RedisSentinelPasswordFile, "redis-sentinel-password-file", "", "file holding the sentinels' password (trailing newline ignored)")
	fs.BoolVar(&c.RedisTLS, "redis-tls", false, "connect to Redis (and the sentinels) over TLS; a rediss:// -redis URL implies it")
	fs.StringVar(&c.RedisTLSCA, "redis-tls-ca", "", "PEM CA certificates that sign the Redis servers' certificates (empty: the system roots)")
	fs.StringVar(&c.RedisTLSCert, "redis-tls-cert", "", "PEM client certificate for Redis TLS (tls-auth-clients yes), with -redis-tls-key")
	fs.StringVar(&c.RedisTLSKey, "redis-tls-key", "", "PEM private key of -redis-tls-cert")
	fs.StringVar(&c.RedisTLSServerName, "redis-tls-server-name", "", "name checked in the Redis servers' certificates (empty: the host dialed)")
}

// redisConn is what validateRedis parsed: which deployment and how to
// reach it. newBroker builds the client from it.
type redisConn struct {
	url           *redis.Options // -redis
	clusterAddrs  []string       // -redis-cluster
	sentinelAddrs []string       // -redis-sentinel
	master        string         // -redis-sentinel's master name
	username      string
	password      string
	sentinelPass  string
	tls           *tls.Config
}

// enabled reports whether a Redis deployment is configured.
func (r *redisConn) enabled() bool {
	return r != nil && (r.url != nil || len(r.clusterAddrs) > 0 || len(r.sentinelAddrs) > 0)
}

// Timeouts and retries shared by every Redis client pushd builds.
const (
	redisDialTimeout  = time.Second
	redisReadTimeout  = 2 * time.Second
	redisWriteTimeout = 2 * time.Second
	redisPoolTimeout  = time.Second
)

// client builds the go-redis client: a *redis.Client for -redis and
// -redis-sentinel (the failover client), a *redis.ClusterClient for
// -redis-cluster. MaxRetries is -1 everywhere: a retried FCALL could
// publish twice.
func (r *redisConn) client() redis.UniversalClient {
	switch {
	case r.url != nil:
		return redis.NewClient(r.url)
	case len(r.sentinelAddrs) > 0:
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName:       r.master,
			SentinelAddrs:    r.sentinelAddrs,
			SentinelPassword: r.sentinelPass,
			Username:         r.username,
			Password:         r.password,
			TLSConfig:        r.tls,
			MaxRetries:       -1,
			Protocol:         2,
			DialTimeout:      redisDialTimeout,
			ReadTimeout:      redisReadTimeout,
			WriteTimeout:     redisWriteTimeout,
			PoolTimeout:      redisPoolTimeout,
		})
	}
	return redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:        r.clusterAddrs,
		Username:     r.username,
		Password:     r.password,
		TLSConfig:    r.tls,
		MaxRetries:   -1,
		Protocol:     2,
		DialTimeout:  redisDialTimeout,
		ReadTimeout:  redisReadTimeout,
		WriteTimeout: redisWriteTimeout,
		PoolTimeout:  redisPoolTimeout,
	})
}

// validateRedis parses -redis, -redis-cluster and -redis-sentinel and the
// credential and TLS flags, reading the secret and certificate files once
// (so -check-config reports a bad one).
func (c *Config) validateRedis() []error {
	c.redis = nil
	var errs []error
	if c.RedisPubSubConns < 1 || c.RedisPubSubConns > 64 {
		errs = append(errs, fmt.Errorf("-redis-pubsub-conns %d: want 1..64", c.RedisPubSubConns))
	}
	if c.RedisIngestChannelBytes < 1024 {
		errs = append(errs, fmt.Errorf("-redis-ingest-channel-bytes %d: want at least 1024", c.RedisIngestChannelBytes))
	}
	if c.RedisIngestNodeBytes < int64(c.RedisIngestChannelBytes) {
		errs = append(errs, fmt.Errorf("-redis-ingest-node-bytes %d: want at least -redis-ingest-channel-bytes (%d)", c.RedisIngestNodeBytes, c.RedisIngestChannelBytes))
	}
	n := 0
	for _, v := range []string{c.Redis, c.RedisCluster, c.RedisSentinel} {
		if v != "" {
			n++
		}
	}
	if n > 1 {
		errs = append(errs, errors.New("-redis, -redis-cluster and -redis-sentinel are exclusive"))
	}
	r := &redisConn{}
	var err error
	if r.password, err = secret("redis-password", c.RedisPassword, c.RedisPasswordFile); err != nil {
		errs = append(errs, err)
	}
	if r.sentinelPass, err = secret("redis-sentinel-password", c.RedisSentinelPassword, c.RedisSentinelPasswordFile); err != nil {
		errs = append(errs, err)
	}
	r.username = c.RedisUsername
	useTLS := c.RedisTLS || strings.HasPrefix(c.Redis, "rediss://")
	if !useTLS && (c.RedisTLSCA != "" || c.RedisTLSCert != "" || c.RedisTLSKey != "" || c.RedisTLSServerName != "") {
		errs = append(errs, errors.New("-redis-tls-ca, -redis-tls-cert, -redis-tls-key and -redis-tls-server-name need -redis-tls (or a rediss:// URL)"))
	}
	if useTLS {
		if r.tls, err = c.redisTLSConfig(); err != nil {
			errs = append(errs, err)
		}
	}
	switch {
	case c.Redis != "":
		opt, err := redis.ParseURL(c.Redis)
		if err != nil {
			errs = append(errs, fmt.Errorf("-redis: %w", err))
			break
		}
		opt.MaxRetries = -1 // a retried FCALL could publish twice
		opt.Protocol = 2
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout = redisDialTimeout, redisReadTimeout, redisWriteTimeout, redisPoolTimeout
		// The flags win over credentials in the URL.
		if r.username != "" {
			opt.Username = r.username
		}
		if r.password != "" {
			opt.Password = r.password
		}
		if r.tls != nil {
			opt.TLSConfig = r.tls
		}
		r.url = opt
	case c.RedisCluster != "":
		r.clusterAddrs = splitList(c.RedisCluster)
		for _, a := range r.clusterAddrs {
			if _, _, err := net.SplitHostPort(a); err != nil {
				errs = append(errs, fmt.Errorf("-redis-cluster: bad address %q: %w", a, err))
			}
		}
		if len(r.clusterAddrs) == 0 {
			errs = append(errs, errors.New("-redis-cluster: no address"))
		}
	case c.RedisSentinel != "":
		master, list, ok := strings.Cut(c.RedisSentinel, "@")
		r.master, r.sentinelAddrs = strings.TrimSpace(master), splitList(list)
		if !ok || r.master == "" || len(r.sentinelAddrs) == 0 {
			errs = append(errs, fmt.Errorf("-redis-sentinel %q: want master@host:port,host:port,...", c.RedisSentinel))
		}
		for _, a := range r.sentinelAddrs {
			if _, _, err := net.SplitHostPort(a); err != nil {
				errs = append(errs, fmt.Errorf("-redis-sentinel: bad address %q: %w", a, err))
			}
		}
	default:
		if r.username != "" || r.password != "" || r.sentinelPass != "" || c.RedisTLS {
			errs = append(errs, errors.New("-redis-username, -redis-password(-file), -redis-sentinel-password(-file) and -redis-tls need -redis, -redis-sentinel or -redis-cluster"))
		}
		return errs
	}
	if r.sentinelPass != "" && len(r.sentinelAddrs) == 0 {
		errs = append(errs, errors.New("-redis-sentinel-password(-file) needs -redis-sentinel"))
	}
	if r.username != "" && r.password == "" && (r.url == nil || r.url.Password == "") {
		errs = append(errs, errors.New("-redis-username needs a password (-redis-password-file or PUSHD_REDIS_PASSWORD)"))
	}
	if len(errs) == 0 {
		c.redis = r
	}
	return errs
}

// secret returns a secret given inline (flag, PUSHD_* env or config file)
// or in a file (trailing newline ignored); not both.
func secret(name, inline, file string) (string, error) {
	if file == "" {
		return inline, nil
	}
	if inline != "" {
		return "", fmt.Errorf("-%s and -%s-file are exclusive", name, name)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("-%s-file: %w", name, err)
	}
	v := strings.TrimRight(string(b), "\r\n")
	if v == "" {
		return "", fmt.Errorf("-%s-file: the file is empty", name)
	}
	return v, nil
}

// redisTLSConfig builds the client TLS configuration from -redis-tls-*.
func (c *Config) redisTLSConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.RedisTLSServerName}
	if c.RedisTLSCA != "" {
		pem, err := os.ReadFile(c.RedisTLSCA)
		if err != nil {
			return nil, fmt.Errorf("-redis-tls-ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-redis-tls-ca %s: no PEM certificate in it", c.RedisTLSCA)
		}
	}
	if (c.RedisTLSCert == "") != (c.RedisTLSKey == "") {
		return nil, errors.New("-redis-tls-cert and -redis-tls-key go together")
	}
	if c.RedisTLSCert != "" {
		cert, err := tls.LoadX509KeyPair(c.RedisTLSCert, c.RedisTLSKey)
		if err != nil {
			return nil, fmt.Errorf("-redis-tls-cert/-redis-tls-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
