package agent

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gemba-io/gemba/config"
)

// handleReload is POST /admin/reload: the `gemba-agent reload` command and anything that cannot
// send the process a SIGHUP. It changes state, so it takes requests only from this host and, when
// http.admin_token is set, only with that token (Authorization: Bearer). CSRF tokens would add
// nothing: this is not a browser endpoint and holds no cookie session. A browser on the gateway
// could still send a token-less cross-origin POST to localhost, so a request carrying an Origin
// header (every browser sends one on such a POST; curl and the reload command do not) is refused.
//
// 200 with the ReloadResult when applied; 422 with its problems when the file is invalid (the old
// config keeps running); 501 when the agent has no file to read; 503 when the agent is not running.
func (a *Agent) handleReload(w http.ResponseWriter, r *http.Request) {
	if code, why := a.adminAllowed(r); code != 0 {
		a.log.Warn("admin request refused", "path", r.URL.Path, "remote", r.RemoteAddr, "why", why)
		http.Error(w, why, code)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.Agent.ShutdownTimeout+5*time.Second)
	defer cancel()
	res, err := a.Reload(ctx)
	switch {
	case errors.Is(err, ErrReloadUnsupported):
		http.Error(w, err.Error(), http.StatusNotImplemented)
		return
	case err != nil:
		http.Error(w, "agent not running: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if !res.Applied {
		w.WriteHeader(http.StatusUnprocessableEntity)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(res)
}

// adminAllowed returns 0 for a request that may change state, else the status code and why not.
func (a *Agent) adminAllowed(r *http.Request) (int, string) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() && !sameHost(r, ip) {
		return http.StatusForbidden, "admin endpoints answer clients on this host only (loopback, or the listener's own address)"
	}
	if r.Header.Get("Origin") != "" {
		return http.StatusForbidden, "admin endpoints refuse browser requests (Origin header present)"
	}
	tok := a.cfg.HTTP.AdminToken.Value()
	if tok == "" {
		return 0, ""
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || !config.TokenEqual(got, tok) {
		return http.StatusUnauthorized, "admin token missing or wrong (Authorization: Bearer, http.admin_token)"
	}
	return 0, ""
}

// sameHost reports whether a client at ip is this host: on a listener bound to a LAN address, a
// client on the same host connects from that address (the kernel takes the destination as the
// source). Another host cannot complete a TCP handshake from our address: the replies stay here.
func sameHost(r *http.Request, ip net.IP) bool {
	la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	tcp, ok := la.(*net.TCPAddr)
	return ok && tcp.IP.Equal(ip)
}
