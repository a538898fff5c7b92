#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# kcopydfs-entrypoint: the container image's entrypoint.  Runs kcopydfs in
# the foreground on $KCOPYDFS_MOUNT (default /mnt/kcopyd, made if missing),
# with the container's arguments as its options, for example:
#   docker run ... kcopydfs -o allow_other --state-dir /var/lib/kcopydfs
# kcopydfs replaces this shell, so the SIGTERM of docker stop reaches it
# and its exit status is the container's.  See doc/containers.md.
set -eu

mountpoint=${KCOPYDFS_MOUNT:-/mnt/kcopyd}
mkdir -p "$mountpoint"
exec kcopydfs -f "$@" "$mountpoint"
