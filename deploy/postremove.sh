#!/bin/sh
# gemba-agent post-remove (deb: remove | purge | upgrade ...; rpm: 0 erase, 1 upgrade).
# purge also deletes the buffer in /var/lib/gemba (data not yet forwarded is lost, as purge means)
# and the config dir. The gemba user stays, as Debian recommends for system users: files it owned
# elsewhere would otherwise pass to a later user with the same uid.
set -e

case "$1" in
	purge)
		rm -rf /var/lib/gemba /etc/gemba
		;;
esac
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
