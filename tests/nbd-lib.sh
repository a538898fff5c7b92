# SPDX-License-Identifier: LGPL-2.1-or-later
#
# nbd-lib.sh: NBD servers for the shell tests.  Sourced, not run, after
# report-lib.sh (or kcopydfs-lib.sh, which sources it):
#   . "${TESTS_SRCDIR:-$(dirname "$0")}/nbd-lib.sh"
#
#   nbd_require                  skip (77) unless nbdkit, nbdinfo, nbdcopy,
#                                qemu-nbd and qemu-img are installed
#   nbd_server_start [--tcp] [--tls PSKFILE] NBDKIT-ARGS...
#                                nbdkit -f --exit-with-parent with the
#                                filters, plugin and parameters given, on a
#                                Unix socket of its own (or a free port of
#                                127.0.0.1 with --tcp; TLS required with
#                                --tls); sets NBD_URI (nbd+unix:///?socket=,
#                                nbd://127.0.0.1:PORT/, or nbds://USER@...
#                                with tls-psk-file=, USER the key file's
#                                first), NBD_PID, NBD_SOCK (or
#                                NBD_PORT) and NBD_LOG, once it accepts
#                                connections (10 s at most)
#   nbd_psk_file PATH [USER]     a PSK file (USER:64 hex digits, mode 0600),
#                                as psktool makes; USER defaults to alice
#   nbd_qcow2_create PATH SIZE   qemu-img create -f qcow2
#   qemu_nbd_start IMAGE [FMT]   qemu-nbd on a Unix socket, persistent, 8
#                                clients; sets NBD_URI, NBD_PID, NBD_SOCK
#   nbd_server_stop PID          SIGCONT then SIGKILL, and reap it
#
# Every server is stopped, and the directory of their sockets and logs
# ($nbd_dir) removed, by the EXIT trap: the first start chains its cleanup
# in front of whatever EXIT trap is set then (kcopydfs-lib.sh's setup_work
# sets one), so start servers after setting up the rest.

nbd_dir=
nbd_server_pids=()
nbd_lib_armed=0
nbd_count=0

nbd_require() {
	local tool

	for tool in nbdkit nbdinfo nbdcopy qemu-nbd qemu-img; do
		command -v "$tool" >/dev/null || skip_all "needs $tool (contrib/deps.sh installs it)"
	done
}

nbd_lib_cleanup() {
	local pid

	for pid in "${nbd_server_pids[@]}"; do
		kill -CONT "$pid" 2>/dev/null
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	nbd_server_pids=()
	[ -n "$nbd_dir" ] && rm -rf "$nbd_dir"
	nbd_dir=
}

# Make $nbd_dir and put the cleanup in front of the EXIT trap, once.
nbd_lib_arm() {
	local previous

	[ "$nbd_lib_armed" = 1 ] && return 0
	nbd_dir=$(mktemp -d /tmp/kcopyd-nbd.XXXXXX) || return 1
	chmod 0755 "$nbd_dir"
	previous=$(trap -p EXIT)
	previous=${previous#trap -- \'}
	previous=${previous%\' EXIT}
	# shellcheck disable=SC2064 # the previous trap is expanded now, on purpose
	trap "nbd_lib_cleanup; ${previous:-:}" EXIT
	nbd_lib_armed=1
}

# A TCP port of 127.0.0.1 that nothing listens on now.
nbd_free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Wait until $NBD_SOCK or 127.0.0.1:$NBD_PORT accepts connections, the server still alive.
nbd_wait_up() {
	local name=$1 tries

	for ((tries = 0; tries < 1000; tries++)); do
		# A connect, not the socket file: it is there between bind and listen.
		python3 - "$NBD_SOCK" "$NBD_PORT" 2>/dev/null <<-'EOF' && return 0
			import socket, sys
			if sys.argv[1]:
			    socket.socket(socket.AF_UNIX).connect(sys.argv[1])
			else:
			    socket.create_connection(("127.0.0.1", int(sys.argv[2])))
		EOF
		kill -0 "$NBD_PID" 2>/dev/null || break
		sleep 0.01
	done
	echo "$name did not start:" >&2
	cat "$NBD_LOG" >&2
	return 1
}

nbd_server_start() {
	local tcp=0 psk= args user

	while :; do
		case "$1" in
		--tcp) tcp=1; shift ;;
		--tls) psk=$2; shift 2 ;;
		*) break ;;
		esac
	done
	nbd_lib_arm || return 1
	nbd_count=$((nbd_count + 1))
	NBD_LOG=$nbd_dir/nbdkit$nbd_count.log
	args=(-f --exit-with-parent)
	if [ -n "$psk" ]; then
		args+=(--tls=require "--tls-psk=$psk")
		# The key file's first user: libnbd's default, the login name, a test has not.
		user=$(head -n1 "$psk" | cut -d: -f1)
	fi
	if [ "$tcp" = 1 ]; then
		NBD_SOCK=
		NBD_PORT=$(nbd_free_port) || return 1
		args+=(-i 127.0.0.1 -p "$NBD_PORT")
		NBD_URI=nbd://127.0.0.1:$NBD_PORT/
		[ -n "$psk" ] && NBD_URI=nbds://$user@127.0.0.1:$NBD_PORT/?tls-psk-file=$psk
	else
		NBD_PORT=
		NBD_SOCK=$nbd_dir/nbdkit$nbd_count.sock
		args+=(-U "$NBD_SOCK")
		NBD_URI="nbd+unix:///?socket=$NBD_SOCK"
		[ -n "$psk" ] && NBD_URI="nbds+unix://$user@/?socket=$NBD_SOCK&tls-psk-file=$psk"
	fi
	nbdkit "${args[@]}" "$@" >"$NBD_LOG" 2>&1 &
	NBD_PID=$!
	nbd_server_pids+=("$NBD_PID")
	nbd_wait_up nbdkit
}

nbd_psk_file() {
	local path=$1 user=${2:-alice} key

	key=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
	(umask 077 && printf '%s:%s\n' "$user" "$key" >"$path")
}

nbd_qcow2_create() {
	qemu-img create -q -f qcow2 "$1" "$2"
}

qemu_nbd_start() {
	local image=$1 format=${2:-qcow2}

	nbd_lib_arm || return 1
	nbd_count=$((nbd_count + 1))
	NBD_LOG=$nbd_dir/qemu-nbd$nbd_count.log
	NBD_PORT=
	NBD_SOCK=$nbd_dir/qemu-nbd$nbd_count.sock
	NBD_URI="nbd+unix:///?socket=$NBD_SOCK"
	qemu-nbd -k "$NBD_SOCK" -f "$format" -t -e 8 "$image" >"$NBD_LOG" 2>&1 &
	NBD_PID=$!
	nbd_server_pids+=("$NBD_PID")
	nbd_wait_up qemu-nbd
}

nbd_server_stop() {
	kill -CONT "$1" 2>/dev/null
	kill -KILL "$1" 2>/dev/null
	wait "$1" 2>/dev/null
	return 0
}
