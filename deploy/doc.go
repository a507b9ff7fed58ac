// Package deploy holds the systemd unit and the nfpm packaging (.deb, .rpm) of gemba-agent, and
// the tests that check the unit's hardening score and install, inspect and purge the real .deb.
package deploy
