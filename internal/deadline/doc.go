// Package deadline owns Shared: bounded contexts handed out by the
// thousand without a timer, a context and a channel each. Callers within
// one short window share a context that ends at its deadline (between d
// and d+slack after each call), so a subscribe storm through the protocol
// handler and the Redis broker costs one timer per window.
//
// It must never cancel a context early or hand out one with less than d
// left: callers rely on the bound being at least what they asked for.
package deadline
