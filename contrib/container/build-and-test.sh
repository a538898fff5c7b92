#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# build-and-test.sh: build contrib/container/Containerfile with podman, for
# real, and run the image the ways doc/containers.md describes.
#   contrib/container/build-and-test.sh [--save FILE] [--logs DIR]
# As root, on Debian 12 or later (or a host with podman and mmdebstrap):
#  1. installs podman, crun, runc, netavark, iptables and mmdebstrap with apt-get
#     when they are missing (they are left installed, as contrib/deps.sh's);
#  2. makes the base images from the Debian mirror this host's apt uses:
#     mmdebstrap --variant=minbase bookworm, imported as debian:bookworm and
#     tagged debian:bookworm-slim, so that the Containerfile's FROM lines
#     resolve without a registry (podman build --pull=never);
#  3. builds the image (podman build -f contrib/container/Containerfile);
#  4. runs it: the daemon in a container, a copy written from podman exec,
#     podman stop (exit status 0); then the daemon in a container whose
#     mount reaches the host through a parent bound rshared, a copy written
#     on the host, podman stop, the mount gone from the host too;
#  5. pattern B: the image in rootless podman as an ordinary user
#     ($ROOTLESS_USER, default nobody), a copy from podman exec, podman stop.
#  6. contrib/demo.sh in a fresh minbase container (privileged, the host's
#     /dev bound): it runs, both copies match, and it installed none of the
#     test and packaging tools (contrib/deps.sh --build is all it asks for).
# Everything podman makes lives in a storage of its own (podman --root and
# --runroot in a temporary directory), so a debian:bookworm the host's
# podman already has is neither used nor touched; that storage, the
# containers, the images and the mounts are removed on exit.  --save FILE
# keeps the built image as a podman save archive (podman load -i FILE).
# --logs DIR keeps the logs (mmdebstrap, podman build, the containers').
#
# Prints PASS/FAIL lines, the time of each step, about how much the host
# downloaded, and "N passed, M failed" last; exits 1 on any failure, 77
# when podman cannot run a container here (with the reason).
# Not part of make check: it downloads about 250 MiB and takes about four minutes.
set -u

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
# Reporting (report-lib.sh) and is_mounted; sourcing it defines, runs nothing.
# shellcheck source=../../tests/kcopydfs-lib.sh
. "$top/tests/kcopydfs-lib.sh"

save=
logs=
while [ $# -gt 0 ]; do
	case $1 in
	--save) save=$2; shift 2 ;;
	--logs) logs=$2; shift 2 ;;
	*) echo "usage: $0 [--save FILE] [--logs DIR]" >&2; exit 2 ;;
	esac
done

[ "$(id -u)" = 0 ] || skip_all "needs root (apt-get, rootful podman, mounts)"
[ -c /dev/fuse ] || skip_all "no /dev/fuse"
[ "$(uname -s)" = Linux ] || skip_all "needs Linux"

version=$(sed -n 's/^AC_INIT(\[kcopyd\], \[\([^]]*\)\].*/\1/p' "$top/configure.ac")
base=docker.io/library/debian
image=localhost/kcopydfs-build-and-test
suite=bookworm
# Pattern B's ordinary user (doc/containers.md); its files are made in a directory of the script's.
rootless_user=${ROOTLESS_USER:-nobody}
started=$SECONDS

# rx_bytes: what every interface but lo has received, for the download estimate.
rx_bytes() {
	local file total=0
	for file in /sys/class/net/*/statistics/rx_bytes; do
		case $file in
		*/lo/* | */ifb*/* | */veth*/* | */podman*/* | */cni*/* | */docker*/*) ;; # loopback, or traffic counted already
		*) total=$((total + $(cat "$file"))) ;;
		esac
	done
	echo "$total"
}
rx_start=$(rx_bytes)

# step NAME: print the time the previous step took, and start this one.
step_name=
step_started=$SECONDS
step() {
	[ -n "$step_name" ] && echo "time: $step_name: $((SECONDS - step_started)) s"
	step_name=$1
	step_started=$SECONDS
	[ -n "$step_name" ] && echo "--- $step_name"
}

# show FILE: its last lines, indented, after a FAIL.
show() {
	[ -f "$1" ] && tail -n "${2:-25}" "$1" | sed 's/^/      | /'
}

# --- 1. the tools -------------------------------------------------------------------------

step "install podman and mmdebstrap (apt-get)"
packages=(podman crun runc netavark iptables mmdebstrap)
missing=()
for package in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
	command -v apt-get >/dev/null || skip_all "needs ${missing[*]}, and there is no apt-get to install them"
	echo "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	if ! { apt-get update -qq && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >/tmp/kcopydfs-ctr-apt.$$ 2>&1; then
		fail "apt-get install ${missing[*]}" "installed" "apt-get failed"
		show /tmp/kcopydfs-ctr-apt.$$
		rm -f /tmp/kcopydfs-ctr-apt.$$
		finish
	fi
	grep '^Need to get' /tmp/kcopydfs-ctr-apt.$$ | sed 's/^/apt-get (host): /'
	rm -f /tmp/kcopydfs-ctr-apt.$$
fi
pass "podman $(podman --version | awk '{print $NF}') and mmdebstrap $(mmdebstrap --version | awk '{print $NF}') are installed"

# --- podman in a storage of its own, and the cleanup --------------------------------------

# What podman makes outside its --root whatever it is told (the blob cache, network state).
# /run/netns: podman makes it a mount of its own for a container's network namespace.
podman_dirs=()
for dir in /var/lib/containers /run/containers /run/netns; do
	[ -e "$dir" ] || podman_dirs+=("$dir")
done
tmp=$(mktemp -d /var/tmp/kcopydfs-ctr.XXXXXX)
chmod 0755 "$tmp"
log=$tmp/logs
mkdir "$log"
# engine_args: what this host needs of any podman, root's or a user's.
engine_args=()
# No systemd as PID 1 (a bare VM, a CI container): cgroups by hand, events in a file.
[ -d /run/systemd/system ] || engine_args+=(--cgroup-manager cgroupfs --events-backend file)
pm() {
	TMPDIR=$tmp/buildtmp podman --root "$tmp/storage" --runroot "$tmp/run" --tmpdir "$tmp/libpod" \
		"${engine_args[@]}" "$@"
}
mkdir "$tmp/buildtmp"
# crun (podman's default) refuses a host with cgroup v1 controllers beside
# cgroup v2's ("cgroups in hybrid mode not supported"); runc takes v1 and hybrid.
if [ "$(stat -f -c %T /sys/fs/cgroup)" != cgroup2fs ]; then
	engine_args+=(--runtime runc)
	echo "cgroup v1 or hybrid here: podman --runtime runc"
fi
# Root's podman and buildah raise the containers' RLIMIT_NOFILE and
# RLIMIT_NPROC to 1048576; without CAP_SYS_RESOURCE (a VM or CI sandbox may
# withhold it) setrlimit fails and no container starts, so ask for limits
# podman may give: its RLIMIT_NOFILE is this shell's, and its RLIMIT_NPROC
# was kernel.pid_max where this was written (below this shell's).
limits=()
cap_effective=$((0x$(awk '/^CapEff:/ { print $2 }' /proc/self/status)))
if (((cap_effective >> 24 & 1) == 0)); then # CAP_SYS_RESOURCE is 24
	nproc=$(ulimit -Hu)
	pid_max=$(cat /proc/sys/kernel/pid_max)
	[ "$nproc" = unlimited ] || [ "$nproc" -gt "$pid_max" ] && nproc=$pid_max
	limits=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit "nproc=$nproc:$nproc")
	echo "no CAP_SYS_RESOURCE here: podman ${limits[*]}"
fi
containers=()
shared_mounts=()

cleanup_podman() {
	local name mount_point
	step ""
	for name in "${containers[@]}"; do
		pm rm -f -t 2 "$name" >/dev/null 2>&1
	done
	[ -n "${rootless:-}" ] && kill_pause
	# Not podman system reset: it also removes the host's networks (/etc/containers/networks).
	pm rmi -a -f >/dev/null 2>&1
	for mount_point in "${shared_mounts[@]}"; do
		is_mounted "$mount_point" && umount -l "$mount_point"
	done
	# Whatever podman left mounted under its storage (overlay layers, shm), deepest first.
	awk -v dir="$tmp/" 'index($2, dir) == 1 { print $2 }' /proc/mounts | sort -r | while read -r mount_point; do
		umount -l "$mount_point"
	done
	if [ -n "$logs" ]; then
		mkdir -p "$logs" && cp -r "$log"/. "$logs"/ && echo "logs: $logs"
	fi
	rm -rf "$tmp"
	for dir in "${podman_dirs[@]}"; do
		is_mounted "$dir" && umount "$dir"
		rm -rf "$dir"
	done
	echo "time: total: $((SECONDS - started)) s"
	echo "downloaded: about $((($(rx_bytes) - rx_start) / 1048576)) MiB (what this host received meanwhile)"
}
trap cleanup_podman EXIT
trap 'exit 130' INT TERM
# end / skip REASON: clean up first, so that the closing line is the last.
end() {
	trap - EXIT
	cleanup_podman
	finish
}
skip() {
	trap - EXIT
	cleanup_podman
	skip_all "$@"
}

# --- 2. the base images -------------------------------------------------------------------

step "base image: mmdebstrap --variant=minbase $suite, podman import"
# The host's own Debian sources for the suite, its -updates and -security, as
# sources.list lines: the same mirror as the host's apt, in either format.
mirrors=()
# shellcheck disable=SC2016 # $(FIELD) is apt's, not the shell's
while read -r uri release components; do
	mirrors+=("deb $uri $release $components")
done < <(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Created-By: Packages' 2>/dev/null |
	awk -v suite="$suite" '$2 == suite || $2 == suite "-updates" || $2 == suite "-security" {
		key = $1 " " $2
		if (!(key in components)) { order[++n] = key; components[key] = $3 }
		else if (index(" " components[key] " ", " " $3 " ") == 0) components[key] = components[key] " " $3
	} END { for (i = 1; i <= n; i++) print order[i], components[order[i]] }')
[ ${#mirrors[@]} -gt 0 ] && printf 'mirror: %s\n' "${mirrors[@]}" || echo "mirror: none for $suite in this host's apt sources; mmdebstrap's default"
if ! mmdebstrap --variant=minbase "$suite" "$tmp/base.tar" "${mirrors[@]}" >"$log/mmdebstrap.log" 2>&1; then
	fail "mmdebstrap --variant=minbase $suite" "a tarball" "it failed"
	show "$log/mmdebstrap.log"
	end
fi
if pm import --change 'CMD ["bash"]' "$tmp/base.tar" "$base:$suite" >"$log/import.log" 2>&1 &&
	pm tag "$base:$suite" "$base:$suite-slim" >>"$log/import.log" 2>&1; then
	pass "$base:$suite and :$suite-slim imported ($(($(stat -c %s "$tmp/base.tar") / 1048576)) MiB, mmdebstrap minbase)"
else
	fail "podman import of the mmdebstrap tarball" "$base:$suite" "it failed"
	show "$log/import.log"
	end
fi
rm -f "$tmp/base.tar"

# Can podman run a container at all here?  If not, nothing else can be tested: 77.
if ! pm run "${limits[@]}" --rm --network none "$base:$suite" true >"$log/probe.log" 2>&1; then
	sed 's/^/      | /' "$log/probe.log"
	skip "podman cannot run a container on this machine (podman run --rm --network none $base:$suite true failed, above)"
fi

# The build's RUN steps need the mirror.  --network host: podman's default
# bridge (netavark) works too, but leaves its iptables chains and
# net.ipv4.ip_forward=1 on the host, which a test should not.
if pm run "${limits[@]}" --rm --network host "$base:$suite" apt-get update >"$log/network.log" 2>&1; then
	pass "apt-get update in a container of the base image reaches the mirror (--network host)"
else
	fail "apt-get update in a container of the base image" "it reaches the mirror with --network host" "it does not"
	show "$log/network.log" 10
	end
fi
build_args=(--network host)

# --- 3. the image -------------------------------------------------------------------------

step "podman build -f contrib/container/Containerfile"
if (cd "$top" && pm build "${limits[@]}" --pull=never "${build_args[@]}" -t "$image" -f contrib/container/Containerfile .) \
	>"$log/build.log" 2>&1; then
	pass "podman build -t $image -f contrib/container/Containerfile . ($(pm image inspect -f '{{.Size}}' "$image" | awk '{ printf "%d MiB", $1 / 1048576 }'))"
	grep '^Need to get' "$log/build.log" | sed 's/^/apt-get (build, then runtime stage): /'
else
	fail "podman build -f contrib/container/Containerfile" "an image" "the build failed"
	show "$log/build.log" 40
	end
fi
if [ -n "$save" ]; then
	if pm save -o "$save" "$image" >/dev/null 2>&1; then
		echo "saved: $save (podman load -i $save)"
	else
		fail "podman save -o $save" "an archive" "it failed"
	fi
fi

step "run the image"
check "kcopydfs --version in the image" "kcopydfs (kcopyd) $version" \
	"$(pm run "${limits[@]}" --rm --network none --entrypoint kcopydfs "$image" --version 2>&1 | head -n 1)"
check "kcopy --version in the image" "kcopy (kcopyd) $version" \
	"$(pm run "${limits[@]}" --rm --network none --entrypoint kcopy "$image" --version 2>&1 | head -n 1)"

# wait_for WHAT COMMAND...: retry COMMAND for 10 s; 0 once it succeeds.
wait_for() {
	local what=$1
	shift
	for _ in $(seq 100); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "      (gave up waiting for $what)"
	return 1
}
# check_copy NAME SRC DST: DST holds SRC's bytes (cmp on the host).
check_copy() {
	if cmp -s "$2" "$3"; then
		pass "$1: the copy's bytes are the source's (cmp on the host)"
	else
		fail "$1: the copy's bytes" "${3##*/} = ${2##*/}" "they differ"
	fi
}
# stop_and_check NAME CHECK: podman stop (SIGTERM, the image's STOPSIGNAL); exit status 0.
stop_and_check() {
	local name=$1 status
	pm stop -t 10 "$name" >/dev/null 2>&1
	status=$(pm inspect -f '{{.State.ExitCode}}' "$name" 2>&1)
	pm logs "$name" >"$log/$name.log" 2>&1
	check_or_show "$2" 0 "$status" "$(cat "$log/$name.log")"
}
# check_or_show NAME EXPECTED GOT TEXT: check, and TEXT's last lines on a FAIL.
check_or_show() {
	if [ "$2" = "$3" ]; then
		pass "$1"
	else
		fail "$1" "$2" "$3"
		tail -n 10 <<<"$4" | sed 's/^/      | /'
	fi
}
security_args=()
# AppArmor's default profile forbids mount(2) (doc/containers.md).
[ -d /sys/kernel/security/apparmor ] && security_args=(--security-opt apparmor=unconfined)

# --- 4a. the daemon in a container, used from podman exec -------------------------------------

data=$tmp/data
mkdir "$data"
head -c 8M /dev/urandom >"$data/a.img"
truncate -s 8M "$data/b.img"
name=kcopydfs-test-exec-$$
containers+=("$name")
if pm run "${limits[@]}" -d --name "$name" --network none --device /dev/fuse --cap-add SYS_ADMIN "${security_args[@]}" \
	-v "$data:/data" "$image" >"$log/run-exec.log" 2>&1 &&
	wait_for "the mount in $name" pm exec "$name" cat /mnt/kcopyd/version; then
	pass "podman run -d --device /dev/fuse --cap-add SYS_ADMIN -v DIR:/data: kcopydfs mounts /mnt/kcopyd"
else
	fail "podman run -d ... $image" "kcopydfs mounted at /mnt/kcopyd" "not mounted"
	show "$log/run-exec.log" 10
	pm logs "$name" 2>&1 | tail -n 10 | sed 's/^/      | /'
fi
state=$(pm exec "$name" sh -c 'mkdir /mnt/kcopyd/jobs/j &&
	echo "copy from=/data/a.img to=/data/b.img" > /mnt/kcopyd/jobs/j/ctl &&
	timeout 30 cat /mnt/kcopyd/jobs/j/wait' 2>&1)
check_or_show "a copy written with podman exec: the job's state" "done" "$(sed -n 's/^state: //p' <<<"$state")" "$state"
check_copy "podman exec" "$data/a.img" "$data/b.img"
stop_and_check "$name" "podman stop: the container's exit status (kcopydfs after SIGTERM)"

# --- 4b. the daemon in a container, its mount shared with the host (A′) -----------------------

srv=$tmp/srv
mkdir -p "$srv/kcopyd" "$srv/images"
head -c 8M /dev/urandom >"$srv/images/a.img"
truncate -s 8M "$srv/images/b.img"
# The parent a shared mount of its own, as the doc says to make it.
mount --bind "$srv/kcopyd" "$srv/kcopyd" && shared_mounts+=("$srv/kcopyd") &&
	mount --make-private "$srv/kcopyd" && mount --make-shared "$srv/kcopyd"
mnt=$srv/kcopyd/mnt
name=kcopydfs-test-shared-$$
containers+=("$name")
if pm run "${limits[@]}" -d --name "$name" --network none --device /dev/fuse --cap-add SYS_ADMIN "${security_args[@]}" \
	-v "$srv/kcopyd:$srv/kcopyd:rshared" -v "$srv/images:$srv/images" -e KCOPYDFS_MOUNT="$mnt" \
	"$image" -o allow_other >"$log/run-shared.log" 2>&1 &&
	wait_for "the mount on the host" cat "$mnt/version"; then
	pass "-v PARENT:PARENT:rshared: the container's mount appears on the host ($(awk -v dir="$mnt" '$2 == dir { print $3 }' /proc/mounts))"
else
	fail "podman run -d ... -v PARENT:PARENT:rshared $image -o allow_other" "$mnt mounted on the host" \
		"$(awk -v dir="$mnt" '$2 == dir' /proc/mounts)"
	show "$log/run-shared.log" 10
	pm logs "$name" 2>&1 | tail -n 10 | sed 's/^/      | /'
fi
state=$({ mkdir "$mnt/jobs/j" &&
	echo "copy from=$srv/images/a.img to=$srv/images/b.img" >"$mnt/jobs/j/ctl" &&
	timeout 30 cat "$mnt/jobs/j/wait"; } 2>&1)
check_or_show "a copy written on the host through the shared mount: the job's state" "done" \
	"$(sed -n 's/^state: //p' <<<"$state")" "$state"
check_copy "shared mount" "$srv/images/a.img" "$srv/images/b.img"
stop_and_check "$name" "podman stop: the container's exit status (kcopydfs after SIGTERM)"
if is_mounted "$mnt"; then
	fail "after podman stop, the host's mount" "gone (the unmount propagated)" "still mounted"
else
	pass "after podman stop, the mount is gone from the host too"
fi

# --- 4c. pattern B: rootless podman, as an ordinary user ------------------------------------

step "pattern B: rootless podman as $rootless_user"
# The user's own podman (single-uid mapping when /etc/subuid has no range for
# it: vfs storage that ignores chown errors), run in a mount namespace of
# this script's where /dev/fuse is a 0666 node when the host's is not
# (Debian's fuse3 makes it 0666; a host without udev may have it 0600):
# rootless podman's --device can only pass on what the user may open.
rootless=$tmp/rootless
mkdir -p "$rootless/xdg" "$rootless/images" "$rootless/out"	# out: the user's logs
chmod 0700 "$rootless/xdg"
head -c 8M /dev/urandom >"$rootless/images/a.img"
truncate -s 8M "$rootless/images/b.img"
if ! pm save -o "$rootless/image.tar" "$image" >"$log/save.log" 2>&1; then
	fail "podman save, for the user's podman" "an archive" "it failed"
	show "$log/save.log" 10
	end
fi
chown -R "$rootless_user:" "$rootless"
rootless_podman=(podman --root "$rootless/storage" --runroot "$rootless/run" --storage-driver vfs
	--storage-opt vfs.ignore_chown_errors=true "${engine_args[@]}")
# as_user FUSE COMMAND...: COMMAND as the user, its HOME and XDG_RUNTIME_DIR in $rootless, /dev/fuse
# as FUSE says (host: the host's; 0666: a 0666 node bound over it in a private mount namespace).
as_user() {
	local bind=
	[ "$1" = 0666 ] && bind="mknod '$rootless/fuse' c 10 229 && chmod 0666 '$rootless/fuse' &&
		mount --bind '$rootless/fuse' /dev/fuse &&"
	shift
	# shellcheck disable=SC2016 # expanded by that sh
	(cd / && unshare -m --propagation private sh -c "$bind"' home=$1; shift; exec setpriv --reuid "$0" \
		--regid "$(id -g "$0")" --clear-groups env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$home" \
		XDG_RUNTIME_DIR="$home/xdg" "$@"' "$rootless_user" "$rootless" "$@")
}
# kill_pause: the user's podman leaves a pause process that holds its user and mount
# namespaces, which its next run would join (not seeing the next /dev/fuse); it ignores SIGTERM.
kill_pause() {
	local pid
	pid=$(cat "$rootless/xdg/libpod/tmp/pause.pid" 2>/dev/null) && [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	rm -f "$rootless/xdg/libpod/tmp/pause.pid"
	return 0
}
if ! as_user host "${rootless_podman[@]}" load -q -i "$rootless/image.tar" >"$log/rootless-load.log" 2>&1; then
	fail "podman load, as $rootless_user" "the image in the user's storage" "it failed"
	show "$log/rootless-load.log" 10
	end
fi
kill_pause
rootless_args=(--network none --device /dev/fuse --cap-add SYS_ADMIN -v "$rootless/images:/images" "$image")
fuse_mode=host
if [ "$(stat -c %a /dev/fuse)" != 666 ]; then
	got=$(as_user host "${rootless_podman[@]}" run --rm "${rootless_args[@]}" 2>&1)
	status=$?
	kill_pause
	if [ "$status" = 1 ] && [[ $got == *"failed to open /dev/fuse: Permission denied"* ]]; then
		pass "rootless, the host's /dev/fuse $(stat -c %a /dev/fuse): kcopydfs fails to open it (EACCES), exit status 1"
	else
		fail "rootless, the host's /dev/fuse $(stat -c %a /dev/fuse)" "exit status 1, failed to open /dev/fuse" "$status: $got"
	fi
	fuse_mode=0666
fi
# The daemon's mount is in the container's namespaces only: start it, copy and stop it in one go.
name=kcopydfs-test-rootless-$$
# shellcheck disable=SC2016 # expanded by that bash
as_user "$fuse_mode" bash -c '
	out=$1 name=$2 count=$3
	shift 3
	podman=("${@:1:count}")
	run_args=("${@:count+1}")
	"${podman[@]}" run -d --name "$name" "${run_args[@]}" >"$out/rootless-run.log" 2>&1 || exit 1
	for _ in $(seq 100); do
		"${podman[@]}" exec "$name" cat /mnt/kcopyd/version >/dev/null 2>&1 && break
		sleep 0.1
	done
	"${podman[@]}" exec "$name" sh -c "mkdir /mnt/kcopyd/jobs/j &&
		{ echo \"copy from=/images/a.img to=/images/b.img\" > /mnt/kcopyd/jobs/j/ctl ||
			{ cat /mnt/kcopyd/jobs/j/status; exit 1; }; } &&
		timeout 30 cat /mnt/kcopyd/jobs/j/wait" >"$out/rootless-wait.log" 2>&1
	"${podman[@]}" stop -t 10 "$name" >/dev/null 2>&1
	"${podman[@]}" inspect -f "{{.State.ExitCode}}" "$name" >"$out/rootless-status.log" 2>&1
	"${podman[@]}" logs "$name" >"$out/$name.log" 2>&1
	"${podman[@]}" rm -f "$name" >/dev/null 2>&1
	"${podman[@]}" rmi -a -f >/dev/null 2>&1
	' _ "$rootless/out" "$name" "${#rootless_podman[@]}" "${rootless_podman[@]}" "${rootless_args[@]}"
kill_pause
cp "$rootless/out"/* "$log"/ 2>/dev/null
check_or_show "rootless: a copy written with podman exec: the job's state" "done" \
	"$(sed -n 's/^state: //p' "$log/rootless-wait.log" 2>/dev/null)" "$(cat "$log/rootless-run.log" "$log/rootless-wait.log" 2>/dev/null)"
check_copy "rootless" "$rootless/images/a.img" "$rootless/images/b.img"
check_or_show "rootless: podman stop: the container's exit status (kcopydfs after SIGTERM)" 0 \
	"$(cat "$log/rootless-status.log" 2>/dev/null)" "$(cat "$log/$name.log" 2>/dev/null)"

# --- 5. contrib/demo.sh on a fresh machine ---------------------------------------------------

step "contrib/demo.sh in a fresh $base:$suite container (privileged: loop devices, tmpfs, FUSE)"
# A clean clone of this tree in a minbase Debian: the demo installs what it
# needs, builds, copies and mounts; then the container's packages must hold
# none of the test, fuzzing, benchmark and packaging tools contrib/deps.sh
# adds.  The host's /dev is bound so that the loop devices losetup makes appear.
demo=$tmp/demo
if git clone -q "$top" "$demo" 2>"$log/demo-clone.log"; then
	pm run "${limits[@]}" --rm --network host --privileged -v /dev:/dev -v "$demo:/src" "$base:$suite" \
		bash -c 'cd /src && dpkg-query -W -f "\${Package}\n" >/src/before.txt && contrib/demo.sh &&
			dpkg-query -W -f "\${Package}\n" >/src/installed.txt' \
		>"$log/demo.log" 2>&1
	status=$?
	check_or_show "contrib/demo.sh on a fresh machine: its exit status" 0 "$status" "$(tail -n 25 "$log/demo.log")"
	identical=$(grep -c "images are identical" "$log/demo.log")
	check_or_show "contrib/demo.sh: both copies match (kcopy, then through kcopydfs)" 2 "$identical" "$(tail -n 25 "$log/demo.log")"
	# What the demo added (minbase already has e2fsprogs, say), of what only the
	# full list names; dpkg-dev is in both: build-essential depends on it.
	extra=$(grep -v -x -F -f "$demo/before.txt" "$demo/installed.txt" 2>/dev/null |
		grep -x -F -f <(bash "$top/contrib/deps.sh" --print | grep -v -x -F -f <(bash "$top/contrib/deps.sh" --print --build) |
			grep -v -x dpkg-dev) | tr '\n' ' ')
	[ -s "$demo/installed.txt" ] || extra="(no package list: the demo did not finish)"
	check_or_show "contrib/demo.sh installs none of the test and packaging tools" "" "$extra" ""
else
	fail "git clone $top" "a clone for the demo" "$(cat "$log/demo-clone.log")"
fi

end
