#!/bin/sh
# gemba-agent pre-remove (deb: remove | upgrade NEW; rpm: 0 erase, 1 upgrade).
# On removal stop and disable the service; on upgrade leave it running for postinstall to restart.
set -e

case "$1" in
	remove | 0)
		if [ -d /run/systemd/system ]; then
			systemctl disable --now gemba-agent.service >/dev/null 2>&1 || true
		fi
		;;
esac
exit 0
