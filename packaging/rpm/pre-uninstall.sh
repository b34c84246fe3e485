# $1 = 0 on erase (like %systemd_preun): stop and disable; on upgrade keep running.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now backfilld.service >/dev/null 2>&1 || :
fi
