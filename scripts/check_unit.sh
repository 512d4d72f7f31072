#!/usr/bin/env bash
# Checks docs/commons-mirror.service: systemd accepts it (`systemd-analyze verify`, with
# ExecStart pointed at the binary under test), and its sandbox allows what the README and
# the unit's own comments tell an operator to do through the running node: read datasets
# to add under /srv/commons, write exports there, keep the data dir writable.
set -euo pipefail
commons=${1:?usage: check_unit.sh path/to/commons}
unit=$(dirname "$0")/../docs/commons-mirror.service
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s|/usr/local/bin/commons|$commons|" "$unit" > "$work/commons-mirror.service"
systemd-analyze verify "$work/commons-mirror.service"

# The value of a [Service] key (last one wins, as in systemd).
value() { sed -n "s/^$1=//p" "$work/commons-mirror.service" | tail -n 1; }
fail() { echo "commons-mirror.service: $*" >&2; exit 1; }
rw=$(value ReadWritePaths)
for path in /var/lib/commons /srv/commons; do
  [[ " $rw " == *" $path "* || " $rw " == *" -$path "* ]] \
    || fail "ReadWritePaths ($rw) must include $path: the README adds from and exports to it"
done
[ "$(value ProtectSystem)" = strict ] || fail "ProtectSystem must stay strict"
case "$(value ProtectHome)" in
  true|tmpfs) fail "ProtectHome=$(value ProtectHome) hides home folders from the node: use read-only" ;;
esac
grep -q -- "--data-dir /var/lib/commons" "$work/commons-mirror.service" \
  || fail "ExecStart must use the data dir /var/lib/commons, which ReadWritePaths allows"
grep -q "/srv/commons" "$(dirname "$0")/../README.md" \
  || fail "the README must say where a mirror adds from and exports to (/srv/commons)"
echo "commons-mirror.service: systemd accepts it; data dir and /srv/commons writable, homes read-only"
