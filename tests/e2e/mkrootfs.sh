#!/bin/bash
# mkrootfs.sh OUT.tar.zst [DIR] - build the Debian 12 rootfs the e2e suite boots with systemd-nspawn.
# debootstrap minbase plus systemd, dbus (systemd-run --wait), procps (/bin/kill, pgrep),
# curl, python3 (test upstream + load generator), and whatever hookd's Depends: needs,
# because `dpkg -i` inside does not resolve dependencies.
set -euo pipefail
OUT=${1:?usage: mkrootfs.sh OUT.tar.zst [DIR]}
DIR=${2:-}   # also keep the tree here, unpacked (saves an unpack on a cold cache)
SUITE=${E2E_SUITE:-bookworm}
INCLUDE=${E2E_INCLUDE:-systemd,systemd-sysv,dbus,procps,curl,python3}

mirror_from_apt_sources() {  # the Debian mirror the host's apt already uses for $SUITE
  local m=""
  if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
    m=$(awk -v s="$SUITE" 'tolower($1)=="uris:"{u=$2} tolower($1)=="suites:"{for(i=2;i<=NF;i++) if($i==s && u!=""){print u; exit}}' \
      /etc/apt/sources.list.d/*.sources)
  fi
  if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
    m=$(awk -v s="$SUITE" '$1=="deb" && $3==s {print $2; exit}' /etc/apt/sources.list)
  fi
  [ -n "$m" ] || { echo "mkrootfs: no $SUITE mirror in the apt sources; set E2E_MIRROR=" >&2; return 1; }
  echo "$m"
}
MIRROR=${E2E_MIRROR:-$(mirror_from_apt_sources)}

mkdir -p "$(dirname "$OUT")"
WORK=$(mktemp -d /var/tmp/hookd-e2e-mkrootfs.XXXXXX)
trap 'rm -rf --one-file-system "$WORK"' EXIT
echo "mkrootfs: debootstrap $SUITE from $MIRROR (+$INCLUDE)" >&2
t0=$SECONDS
timeout 900 debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$WORK/root" "$MIRROR" \
  > "$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
R=$WORK/root
rm -f "$R"/var/cache/apt/archives/*.deb "$R"/var/cache/apt/*.bin
rm -rf "$R"/var/lib/apt/lists/*
# Empty (not missing) machine-id: a fresh id each boot, and not a "first boot" that prompts.
: > "$R/etc/machine-id"
echo hookd-e2e > "$R/etc/hostname"
tar --numeric-owner --xattrs --xattrs-include='*' --acls -C "$R" -cf - . | zstd -q -T0 -3 -f -o "$OUT.tmp"
mv -f "$OUT.tmp" "$OUT"
if [ -n "$DIR" ]; then
  rm -rf --one-file-system "$DIR" && mv "$R" "$DIR" && touch "$DIR/.complete"
fi
echo "mkrootfs: $OUT ($(du -h "$OUT" | cut -f1)) in $((SECONDS - t0))s" >&2
