package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// The control channel carries server API calls (disconnect, subscribe,
// unsubscribe a user) and presence join/leave events to every node: one Redis pub/sub channel that every
// node subscribes to at start, or a direct call with the memory broker.
// Calls are fire-and-forget (at most once, like a PUBLISH): a node that
// is down when a call is sent does not see it.

// ControlChannel is the Redis pub/sub channel of the control plane. It
// has no {hash tag}, so it never collides with a pushd:{<channel>} key.
const ControlChannel = "pushd:control"

// ControlVersion is the version of the control message encoding.
const ControlVersion = 1

// MaxControlSize bounds an encoded control message in bytes.
const MaxControlSize = 8 << 10

// ErrControl reports a malformed control message.
var ErrControl = errors.New("cluster: malformed control message")

// Control ops.
const (
	ControlDisconnect  = "disconnect"
	ControlSubscribe   = "subscribe"
	ControlUnsubscribe = "unsubscribe"
	// ControlPresenceJoin and ControlPresenceLeave carry a presence event
	// (User joined or left Ch) to every node's subscribers of Ch.
	ControlPresenceJoin  = "presence_join"
	ControlPresenceLeave = "presence_leave"
)

// ControlMsg is one server API call for every node.
type ControlMsg struct {
	V       int    `json:"v"`
	Op      string `json:"op"`
	User    string `json:"user"`
	Ch      string `json:"ch,omitempty"`
	Code    int    `json:"code,omitempty"`
	Reason  string `json:"reason,omitempty"`
	AfterMs int64  `json:"after_ms"` // disconnect: reconnect hint; -1 none
}

// EncodeControl validates m and encodes it.
func EncodeControl(m ControlMsg) ([]byte, error) {
	m.V = ControlVersion
	if err := m.validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrControl, err)
	}
	if len(b) > MaxControlSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrControl, len(b))
	}
	return b, nil
}

// DecodeControl parses and validates an encoded control message. It never
// panics.
func DecodeControl(b []byte) (ControlMsg, error) {
	var m ControlMsg
	if len(b) > MaxControlSize {
		return m, fmt.Errorf("%w: %d bytes", ErrControl, len(b))
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return ControlMsg{}, fmt.Errorf("%w: %w", ErrControl, err)
	}
	if err := m.validate(); err != nil {
		return ControlMsg{}, err
	}
	return m, nil
}

func (m *ControlMsg) validate() error {
	switch {
	case m.V != ControlVersion:
		return fmt.Errorf("%w: version %d", ErrControl, m.V)
	case m.User == "" || len(m.User) > 255:
		return fmt.Errorf("%w: user must be 1-255 bytes", ErrControl)
	}
	switch m.Op {
	case ControlDisconnect:
		if m.Code != 1000 && m.Code != 1001 && m.Code != 1008 && (m.Code < 4000 || m.Code > 4999) {
			return fmt.Errorf("%w: close code %d (want 1000, 1001, 1008 or 4000-4999)", ErrControl, m.Code)
		}
		if len(m.Reason) > 123 {
			return fmt.Errorf("%w: reason longer than 123 bytes", ErrControl)
		}
	case ControlSubscribe, ControlUnsubscribe, ControlPresenceJoin, ControlPresenceLeave:
		if m.Ch == "" || len(m.Ch) > 255 {
			return fmt.Errorf("%w: ch must be 1-255 bytes", ErrControl)
		}
	default:
		return fmt.Errorf("%w: op %q", ErrControl, m.Op)
	}
	return nil
}

// LocalControl is the control channel of a single node (the memory
// broker): Send calls the handler directly.
type LocalControl struct{ Handle func(ControlMsg) }

// Send delivers m to this node.
func (c *LocalControl) Send(_ context.Context, m ControlMsg) error {
	b, err := EncodeControl(m)
	if err != nil {
		return err
	}
	m, err = DecodeControl(b)
	if err != nil {
		return err
	}
	c.Handle(m)
	return nil
}

// RedisControlConfig configures a RedisControl.
type RedisControlConfig struct {
	Client redis.UniversalClient // required
	Handle func(ControlMsg)      // required; runs on the control goroutine
	Logger *slog.Logger
}

// RedisControl is the control channel over Redis pub/sub: Send publishes,
// Run subscribes and hands every valid message (this node's own
// included) to Handle.
type RedisControl struct {
	cfg  RedisControlConfig
	log  *slog.Logger
	once sync.Once
	stop chan struct{}
	done chan struct{}
}

// NewRedisControl validates cfg.
func NewRedisControl(cfg RedisControlConfig) (*RedisControl, error) {
	if cfg.Client == nil || cfg.Handle == nil {
		return nil, fmt.Errorf("%w: control needs Client and Handle", ErrConfig)
	}
	c := &RedisControl{cfg: cfg, log: cfg.Logger, stop: make(chan struct{}), done: make(chan struct{})}
	if c.log == nil {
		c.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c, nil
}

// Send publishes m to every node, bounded by ctx.
func (c *RedisControl) Send(ctx context.Context, m ControlMsg) error {
	b, err := EncodeControl(m)
	if err != nil {
		return err
	}
	if err := c.cfg.Client.Publish(ctx, ControlChannel, b).Err(); err != nil {
		return fmt.Errorf("%w: control publish: %w", ErrUnavailable, err)
	}
	return nil
}

// Run subscribes to ControlChannel and dispatches messages until ctx ends
// or Shutdown. go-redis resubscribes after a lost connection.
func (c *RedisControl) Run(ctx context.Context) error {
	defer close(c.done)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	ps := c.cfg.Client.Subscribe(ctx, ControlChannel)
	defer ps.Close()
	for {
		if _, err := ps.Receive(ctx); err == nil {
			break
		} else if ctx.Err() != nil {
			return nil
		} else {
			c.log.Warn("control channel: subscribe failed; retrying", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
		}
	}
	c.log.Info("control channel subscribed", "channel", ControlChannel)
	ch := ps.Channel(redis.WithChannelSize(1024))
	for {
		select {
		case <-ctx.Done():
			return nil
		case msg, ok := <-ch:
			if !ok {
				return nil
			}
			m, err := DecodeControl([]byte(msg.Payload))
			if err != nil {
				c.log.Warn("control channel: dropped a message", "err", err)
				continue
			}
			c.cfg.Handle(m)
		}
	}
}

// Shutdown stops Run and waits for it until ctx ends. Idempotent.
func (c *RedisControl) Shutdown(ctx context.Context) error {
	c.once.Do(func() { close(c.stop) })
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
