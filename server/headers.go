package server

import (
	"strconv"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/server/internal/wire"
)

// headerInfo is what the rate-limit headers say about one decision.
type headerInfo struct {
	ok        bool   // a limited, enforced descriptor was found
	limit     uint32 // requests_per_unit
	window    int64  // seconds
	remaining uint32
	resetSecs int64
	retrySecs int64 // Retry-After; -1 when not over limit or no time can be promised
}

// headerInfoOf picks the descriptor the headers describe: among enforced
// (non-shadow) limited descriptors, the one with the least remaining; when
// the request is over limit, only the denied descriptors are considered.
// Retry-After is the longest retry time of the denied descriptors, in whole
// seconds rounded up; a denial that no wait can lift (a ban, a cost over
// capacity) promises none.
func headerInfoOf(resp *limiter.Response) headerInfo {
	h := headerInfo{retrySecs: -1}
	over := resp.Code == limiter.OverLimit
	best := -1
	var retry int64
	never := false
	for i := range resp.Statuses {
		st := &resp.Statuses[i]
		if st.Limit == nil || st.Shadow {
			continue
		}
		if over && st.Code != limiter.OverLimit {
			continue
		}
		if over {
			if st.ResetMicros == 0 {
				never = true
			}
			retry = max(retry, st.ResetMicros)
		}
		if best < 0 || st.Remaining < resp.Statuses[best].Remaining ||
			(st.Remaining == resp.Statuses[best].Remaining && st.ResetMicros > resp.Statuses[best].ResetMicros) {
			best = i
		}
	}
	if best < 0 {
		return h
	}
	st := &resp.Statuses[best]
	h.ok = true
	h.limit = st.Limit.RequestsPerUnit
	h.window = int64(st.Limit.Window().Seconds())
	h.remaining = st.Remaining
	h.resetSecs = ceilSeconds(st.ResetMicros)
	if over && !never {
		h.retrySecs = ceilSeconds(retry)
	}
	return h
}

func ceilSeconds(us int64) int64 {
	if us <= 0 {
		return 0
	}
	return (us + 999_999) / 1_000_000
}

// limitValue formats the draft-03 limit header: "R, R;w=WINDOW".
func (h *headerInfo) limitValue(b []byte) []byte {
	b = strconv.AppendUint(b, uint64(h.limit), 10)
	b = append(b, ", "...)
	b = strconv.AppendUint(b, uint64(h.limit), 10)
	b = append(b, ";w="...)
	return strconv.AppendInt(b, h.window, 10)
}

// rateLimitHeaders formats the rate-limit headers of s.resp: n of them
// (0, 3 or 4), named keys[i], the values s.num[ends[i-1]:ends[i]] (from 0
// for the first).
func (r *rls) rateLimitHeaders(s *scratch) (n int, keys [4]string, ends [4]int) {
	h := headerInfoOf(&s.resp)
	if !h.ok {
		return 0, keys, ends
	}
	keys = [4]string{r.headers.Limit, r.headers.Remaining, r.headers.Reset, "Retry-After"}
	b := h.limitValue(s.num[:0])
	ends[0] = len(b)
	b = strconv.AppendUint(b, uint64(h.remaining), 10)
	ends[1] = len(b)
	b = strconv.AppendInt(b, h.resetSecs, 10)
	ends[2] = len(b)
	n = 3
	if h.retrySecs >= 0 {
		b = strconv.AppendInt(b, h.retrySecs, 10)
		ends[3] = len(b)
		n = 4
	}
	s.num = b
	return n, keys, ends
}

// setHeaders sets rb's headers for s.resp.
func (r *rls) setHeaders(rb *wire.Response, s *scratch) {
	n, keys, ends := r.rateLimitHeaders(s)
	from := 0
	for i := range n {
		rb.SetHeader(i, keys[i], string(s.num[from:ends[i]]))
		from = ends[i]
	}
	rb.SetHeaders(n)
}
