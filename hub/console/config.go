// Package console serves the hub's web console: server-rendered pages (fleet, features, inventory,
// decisions and their why, approvals, rules) with htmx and live updates, behind users and roles.
package console

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/gemba-io/gemba/config"
)

// Role is what a user may do; each role may do what the ones below it may.
type Role int

// Roles, lowest first.
const (
	RoleNone Role = iota
	RoleViewer
	RoleApprover
	RoleAdmin
)

var roleNames = map[string]Role{"viewer": RoleViewer, "approver": RoleApprover, "admin": RoleAdmin}

func (r Role) String() string {
	for n, v := range roleNames {
		if v == r {
			return n
		}
	}
	return "none"
}

// Config is the console section of the hub config.
type Config struct {
	// Enabled serves the console under /console/ on the hub's HTTP listener.
	Enabled bool `yaml:"enabled" json:"enabled"`
	// Users who may sign in; with a proxy, the names it vouches for.
	Users []User `yaml:"users" json:"users"`
	// Proxy, when its user_header is set, takes the user from a reverse proxy's header — only on
	// requests from its trusted addresses; the login form still works for the others.
	Proxy ProxyConfig `yaml:"proxy" json:"proxy"`
	// SessionTTL is how long a session lasts after sign-in.
	SessionTTL time.Duration `yaml:"session_ttl" json:"session_ttl"`
	// SecureCookie marks the session cookie Secure (sent over HTTPS only): set it when the console
	// is reached through TLS (a terminating proxy); a request that came over TLS gets it anyway.
	SecureCookie bool `yaml:"secure_cookie" json:"secure_cookie"`
	// LivePoll is how often the live decision feed looks for new decisions.
	LivePoll time.Duration `yaml:"live_poll" json:"live_poll"`
	// PageSize is how many rows a page shows at most (features, inventory, decisions, fleet, approvals).
	PageSize int `yaml:"page_size" json:"page_size"`
	// SKUUnits is the hub feature (keyed by sku) of units made per window: the Lines table shows
	// each line's SKUs with their units per hour from it. The agents' counters name no standard
	// feature for this, so it is named here ("units" in the example configs).
	SKUUnits string `yaml:"sku_units" json:"sku_units"`
}

// User is one console user.
type User struct {
	Name string `yaml:"name" json:"name"`
	Role string `yaml:"role" json:"role"`
	// PasswordHash is a bcrypt hash (htpasswd -nbBC 12 name pw, or gemba-hub's docs); inline, from
	// ${ENV} or {file: PATH}. Without it the user can only come through the proxy.
	PasswordHash config.Secret `yaml:"password_hash" json:"password_hash"`
}

// ProxyConfig trusts a reverse proxy's user header.
type ProxyConfig struct {
	UserHeader string `yaml:"user_header" json:"user_header"`
	// Trusted are the proxy's addresses or CIDR prefixes; a header from any other peer is ignored.
	Trusted []string `yaml:"trusted" json:"trusted"`
	// DefaultRole is the role of a proxy user not listed under users (empty: such users are refused).
	DefaultRole string `yaml:"default_role" json:"default_role"`
}

// Defaults fills what was left empty.
func (c *Config) Defaults() {
	if c.SessionTTL == 0 {
		c.SessionTTL = 8 * time.Hour
	}
	if c.LivePoll == 0 {
		c.LivePoll = time.Second
	}
	if c.PageSize == 0 {
		c.PageSize = 200
	}
	if c.SKUUnits == "" {
		c.SKUUnits = "units"
	}
}

// DefaultConfig is the console section of an empty file: off.
func DefaultConfig() Config {
	var c Config
	c.Defaults()
	return c
}

// Validate implements config.Validator.
func (c *Config) Validate(r config.Report) {
	if !c.Enabled {
		return
	}
	if len(c.Users) == 0 && c.Proxy.UserHeader == "" {
		r.Errorf("users", "no user can sign in: list users (name, role, password_hash) or set proxy.user_header")
	}
	seen := map[string]bool{}
	for i, u := range c.Users {
		ur := r.Sub("users" + config.Index(i))
		switch {
		case strings.TrimSpace(u.Name) == "":
			ur.Errorf("name", "required")
		case seen[u.Name]:
			ur.Errorf("name", "%q is listed twice", u.Name)
		}
		seen[u.Name] = true
		if _, ok := roleNames[u.Role]; !ok {
			ur.Errorf("role", "%q: want viewer, approver or admin", u.Role)
		}
		if h := u.PasswordHash.Value(); h != "" {
			if _, err := bcrypt.Cost([]byte(h)); err != nil {
				// The hash itself is a secret of sorts: say what is wrong, never print it.
				ur.Errorf("password_hash", "not a bcrypt hash ($2a$/$2b$/$2y$...): %v", err)
			}
		} else if c.Proxy.UserHeader == "" {
			ur.Errorf("password_hash", "required without proxy.user_header (the user could never sign in)")
		}
	}
	pr := r.Sub("proxy")
	if c.Proxy.UserHeader != "" {
		if len(c.Proxy.Trusted) == 0 {
			pr.Errorf("trusted", "list the proxy's addresses: a user header from anyone else must not be believed")
		}
		if c.Proxy.DefaultRole != "" {
			if _, ok := roleNames[c.Proxy.DefaultRole]; !ok {
				pr.Errorf("default_role", "%q: want viewer, approver or admin, or leave it empty", c.Proxy.DefaultRole)
			}
		}
	}
	for i, t := range c.Proxy.Trusted {
		if _, err := parsePrefix(t); err != nil {
			pr.Errorf("trusted"+config.Index(i), "%v", err)
		}
	}
	if c.SessionTTL < time.Minute {
		r.Errorf("session_ttl", "%s: want at least 1m", c.SessionTTL)
	}
	if c.LivePoll < 100*time.Millisecond || c.LivePoll > time.Minute {
		r.Errorf("live_poll", "%s: want 100ms..1m", c.LivePoll)
	}
	if c.PageSize < 10 || c.PageSize > 1000 {
		r.Errorf("page_size", "%d: want 10..1000", c.PageSize)
	}
}

// parsePrefix reads an address or a CIDR prefix.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("%q is not an address or CIDR prefix", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR prefix", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

func (c *Config) user(name string) (User, bool) {
	i := slices.IndexFunc(c.Users, func(u User) bool { return u.Name == name })
	if i < 0 {
		return User{}, false
	}
	return c.Users[i], true
}
