// Package lua holds Sluice's Redis scripts. It has no logic of its own:
// limiter/redis loads the scripts and runs them with EVALSHA.
package lua

import (
	_ "embed"
	"strings"
)

// TokenBucket decides every bucket of one request in one atomic call; see
// the header of tokenbucket.lua for its keys, arguments and reply.
//
//go:embed tokenbucket.lua
var TokenBucket string

// TokenBucketCluster is TokenBucket as a Redis Cluster store runs it: it
// also returns the unsettled marker of every bucket that is short after the
// call (see the script's header). A script of its own, rather than an
// argument, so that one node runs the very script it always has.
var TokenBucketCluster = ForCluster(TokenBucket)

// unsettledOff is the line ForCluster turns on.
const unsettledOff = "\nlocal unsettled = false\n"

// ForCluster returns script with its unsettled markers read, or script as
// it is when it has no such switch.
func ForCluster(script string) string {
	return strings.Replace(script, unsettledOff, "\nlocal unsettled = true\n", 1)
}
