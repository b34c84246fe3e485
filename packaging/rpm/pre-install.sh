# The system user must exist before files are owned by it.
if command -v systemd-sysusers >/dev/null 2>&1; then
    echo 'u backfilld - "backfilld daemon" /var/spool/backfilld /usr/sbin/nologin' | systemd-sysusers - || :
elif ! getent passwd backfilld >/dev/null; then
    useradd --system --home-dir /var/spool/backfilld --shell /usr/sbin/nologin backfilld || :
fi
