#!/usr/bin/env bash
# Both QEMUs the qemu tests and `qemu-check` run against, each as a user has it:
#  * Debian's own qemu-system-x86 (7.2 on bookworm: whole-second calc-dirty-rate windows), installed with
#    apt-get as root when missing;
#  * the QEMU that carries the seed (calc-time-unit: millisecond), bookworm-backports' qemu-system-x86
#    (10.0 today), fetched with `apt-get download` through a private package list (the system's sources and
#    lists stay untouched) and unpacked with `dpkg -x` into .venv/qemu/<version>/, where kvmharness finds it
#    (kvmharness/qemu/launch.py) and passes its firmware with -L.  It runs with the system's own libraries.
# Idempotent; KVMH_NO_QEMU=1 skips it all.  Run from the repository root by scripts/setup.sh.
set -euo pipefail
[ "${KVMH_NO_QEMU:-0}" != 1 ] || exit 0
command -v apt-get >/dev/null 2>&1 || { echo "setup: no apt-get here: install QEMU yourself (qemu-system-x86)" >&2; exit 0; }
export DEBIAN_FRONTEND=noninteractive

if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        echo "setup: installing Debian's QEMU (qemu-system-x86) for the qemu tests and qemu-check" >&2
        apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null; }
    else
        echo "setup: QEMU is not installed; qemu-check and the qemu tests need it (as root: apt-get install qemu-system-x86)" >&2
    fi
fi

BACKPORTS=${KVMH_QEMU_SUITE:-bookworm-backports}
PRIVATE=.venv/qemu
PACKAGES="qemu-system-x86 qemu-system-common qemu-system-data seabios"
if ls "$PRIVATE"/*/usr/bin/qemu-system-x86_64 >/dev/null 2>&1; then
    exit 0
fi
# The Debian mirror the system already uses (its sources name it; nothing else is reached)
codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
mirror() { apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null | awk -v c="$codename" '$2 == c {print $1; exit}'; }
uri=$(mirror)
if [ -z "$uri" ] && [ "$(id -u)" = 0 ]; then apt-get update -qq >/dev/null 2>&1 || true; uri=$(mirror); fi
[ -n "$uri" ] || { echo "setup: no Debian package source is configured: cannot fetch $BACKPORTS's QEMU" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs" "$work/root"
echo "deb $uri $BACKPORTS main" > "$work/sources.list"
apt_private=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
             -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o APT::Sandbox::User=root -q)
echo "setup: fetching $BACKPORTS's QEMU (the seed's millisecond windows) into $PRIVATE/" >&2
fail() { echo "setup: could not fetch $BACKPORTS's QEMU ($1); KVMH_NO_QEMU=1 skips the QEMU set-up" >&2; exit 1; }
apt-get "${apt_private[@]}" update >/dev/null || fail "apt-get update of $BACKPORTS failed"
(cd "$work/debs" && apt-get "${apt_private[@]}" download $(for p in $PACKAGES; do echo "$p/$BACKPORTS"; done) >/dev/null) \
    || fail "apt-get download failed"
for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$work/root"; done
version=$("$work/root/usr/bin/qemu-system-x86_64" -L "$work/root/usr/share/qemu" --version | awk 'NR==1 {print $4}')
[ -n "$version" ] || { echo "setup: $BACKPORTS's QEMU does not run here" >&2; exit 1; }
mkdir -p "$PRIVATE"
rm -rf "${PRIVATE:?}/$version"
mv "$work/root" "$PRIVATE/$version"
echo "setup: QEMU $version in $PRIVATE/$version" >&2
