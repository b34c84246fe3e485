# $1 = 1 on install, 2 on upgrade (like %systemd_post).
systemd-tmpfiles --create /usr/lib/tmpfiles.d/backfilld.conf >/dev/null 2>&1 || :
# The config may hold the metadata DB's password: readable by root and the daemon's group only
# (0640 root:backfilld). Only a file still as shipped (root:root 0640) is regrouped, so an
# operator's own choice stands.
conf=/etc/backfilld/backfilld.toml
if [ -f "$conf" ] && getent group backfilld >/dev/null 2>&1 \
    && [ "$(stat -c '%U:%G %a' "$conf")" = "root:root 640" ]; then
    chgrp backfilld "$conf" && chmod 0640 "$conf"
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -eq 1 ]; then
        systemctl preset backfilld.service >/dev/null 2>&1 || :
    fi
fi
