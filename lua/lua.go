// Package lua holds Sluice's Redis scripts. It has no logic of its own:
// limiter/redis loads the scripts and runs them with EVALSHA.
package lua

import _ "embed"

// TokenBucket decides every bucket of one request in one atomic call; see
// the header of tokenbucket.lua for its keys, arguments and reply.
//
//go:embed tokenbucket.lua
var TokenBucket string
