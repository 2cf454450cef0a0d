package limitertest

import (
	"sync/atomic"
	"time"
)

// Clock is a clock in microseconds that tests move by hand; Now fits a
// memory store's and a deny cache's clock.
type Clock struct{ us atomic.Int64 }

// NewClock returns a Clock reading startMicros.
func NewClock(startMicros int64) *Clock {
	c := &Clock{}
	c.us.Store(startMicros)
	return c
}

// Now is the clock's time in microseconds.
func (c *Clock) Now() int64 { return c.us.Load() }

// Advance moves the clock on by d.
func (c *Clock) Advance(d time.Duration) { c.us.Add(d.Microseconds()) }
