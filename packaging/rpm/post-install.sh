# $1 = 1 on install, 2 on upgrade (like %systemd_post).
systemd-tmpfiles --create /usr/lib/tmpfiles.d/backfilld.conf >/dev/null 2>&1 || :
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -eq 1 ]; then
        systemctl preset backfilld.service >/dev/null 2>&1 || :
    fi
fi
