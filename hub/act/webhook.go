package act

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Sign returns the Standard Webhooks signature header value of one message:
// "v1," + base64(HMAC-SHA256(key, id + "." + timestamp + "." + body)).
func Sign(key []byte, id string, timestamp int64, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte("."))
	m.Write([]byte(strconv.FormatInt(timestamp, 10)))
	m.Write([]byte("."))
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// result is the outcome of one webhook call.
type result struct {
	err        error
	gone       bool          // 410: the receiver wants no more; dead-letter at once
	retryAfter time.Duration // from Retry-After on 429/503
}

// post makes one signed call. Each attempt gets a fresh timestamp (receivers refuse old ones)
// but the same webhook-id, which receivers use to drop duplicates.
func (o *Outbox) post(ctx context.Context, w *Webhook, key []byte, id string, body []byte) result {
	ctx, cancel := context.WithTimeout(ctx, w.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL.Value(), bytes.NewReader(body))
	if err != nil {
		return result{err: fmt.Errorf("webhook %s: %w", w.where(), err)}
	}
	ts := o.cfg.now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", Sign(key, id, ts, body))
	resp, err := o.client.Do(req)
	if err != nil {
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = ue.Err // its message repeats the whole URL
		}
		return result{err: fmt.Errorf("webhook %s: %w", w.where(), err)}
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return result{}
	case resp.StatusCode == http.StatusGone:
		return result{err: fmt.Errorf("webhook %s: 410 Gone", w.where()), gone: true}
	}
	res := result{err: fmt.Errorf("webhook %s: status %s", w.where(), resp.Status)}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		res.retryAfter = retryAfter(resp.Header.Get("Retry-After"), o.cfg.now())
	}
	return res
}

// where names a webhook in errors, logs and the record's last error by its scheme and host only: a
// receiver's token often sits in the URL's path or query (or its user info), and these are read
// by people the secret is not for.
func (w *Webhook) where() string {
	u, err := url.Parse(w.URL.Value())
	if err != nil {
		return "(an unreadable URL)"
	}
	return u.Scheme + "://" + u.Host
}

// retryAfter reads a Retry-After header: seconds or an HTTP date; 0 when absent or unreadable.
// A wait too long for a Duration is the longest one (as a far date is), not a wrapped-round one.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s < 0 {
			return 0
		}
		if int64(s) > math.MaxInt64/int64(time.Second) {
			return math.MaxInt64
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// backoff is the pause after the n-th failed attempt: Initial doubled per attempt up to Max, with
// "equal jitter" (half fixed, half random) so that receivers coming back are not hit all at once.
func (o *Outbox) backoff(n int) time.Duration {
	d := o.cfg.Retry.Initial
	for i := 1; i < n && d < o.cfg.Retry.Max; i++ {
		d *= 2
	}
	d = min(d, o.cfg.Retry.Max)
	return d/2 + rand.N(d/2+1)
}
