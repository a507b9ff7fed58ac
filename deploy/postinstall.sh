#!/bin/sh
# gemba-agent post-install (deb: configure [old-version]; rpm: 1 install, 2 upgrade).
# Creates the gemba system user, hands it its state dir and lets it read its config. The service
# is not started on a first install: the config needs the plant's endpoints first.
set -e

if ! getent group gemba >/dev/null; then
	groupadd --system gemba
fi
if ! getent passwd gemba >/dev/null; then
	useradd --system --gid gemba --home-dir /var/lib/gemba --no-create-home \
		--shell /usr/sbin/nologin --comment "gemba edge agent" gemba
fi

install -d -o gemba -g gemba -m 0750 /var/lib/gemba
chown root:gemba /etc/gemba/agent.yaml
chmod 0640 /etc/gemba/agent.yaml
# conf.d files may name hosts and secret files as agent.yaml does; made again if an admin removed it
# (the unit passes --config-dir and a missing dir stops the agent).
install -d -o root -g gemba -m 0750 /etc/gemba/conf.d

upgrade=0
case "$1" in
	configure) [ -n "$2" ] && upgrade=1 ;;
	2) upgrade=1 ;;
esac

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	if [ "$upgrade" = 1 ]; then
		systemctl try-restart gemba-agent.service >/dev/null 2>&1 || true
	fi
fi
if [ "$upgrade" = 0 ]; then
	echo "gemba-agent installed: edit /etc/gemba/agent.yaml (secrets in /etc/gemba/agent.env, mode 0600),"
	echo "check it with 'gemba-agent validate -c /etc/gemba/agent.yaml', then 'systemctl enable --now gemba-agent'."
fi
exit 0
