#!/bin/sh
# stage.sh STAGEDIR: put this shell runtime (bootstrap, handler.sh) and a
# static busybox into STAGEDIR, ready for `amber build STAGEDIR`.
# BUSYBOX_SRC names the busybox to copy (default /bin/busybox, from Debian's
# busybox-static); it must be statically linked, since the image has no libc.
set -eu

die() {
	echo "stage.sh: $*" >&2
	exit 1
}

[ $# -eq 1 ] || die "usage: stage.sh STAGEDIR"
stage=$1
src=$(cd "$(dirname "$0")" && pwd)
busybox=${BUSYBOX_SRC:-/bin/busybox}

[ -f "$busybox" ] || die "$busybox is missing (Debian: apt-get install busybox-static)"
if command -v file >/dev/null 2>&1; then
	kind=$(file -L "$busybox")
	case $kind in
	*"statically linked"* | *"static-pie linked"*) ;;
	*) die "$busybox is not statically linked ($kind); install busybox-static" ;;
	esac
elif command -v ldd >/dev/null 2>&1; then
	ldd "$busybox" >/dev/null 2>&1 && die "$busybox is dynamically linked; install busybox-static"
else
	die "cannot tell whether $busybox is static: neither file nor ldd is installed"
fi

mkdir -p "$stage"
cp "$src/bootstrap" "$src/handler.sh" "$stage/"
cp "$busybox" "$stage/busybox"
chmod 0755 "$stage/bootstrap" "$stage/busybox"
chmod 0644 "$stage/handler.sh"
echo "staged $stage: bootstrap handler.sh busybox"
