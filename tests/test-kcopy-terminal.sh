#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-kcopy-terminal.sh: kcopy's progress bar in a real terminal (tmux on
# a private socket, fixed sizes).  Two copies of about 20 s each from a
# slow source (nbdkit's delay filter behind nbdfuse, a loop device over
# it) run at once, one in an 80-column window, one in a 40-column window.
# While they run, the windows are captured again and again:
#
#   - the bar takes exactly one row and never wraps (capture-pane -J joins
#     wrapped rows: no joined line is longer than the width);
#   - 80 columns: SIGUSR1 prints one progress line and the copy goes on to
#     its end, exit 0, the destination equal to the source; then the
#     window is narrowed to 40 columns (SIGWINCH) and the bar refits, with
#     nothing left of the wider line;
#   - 40 columns: SIGHUP cancels, the summary is printed, the exit status
#     is 129 and so is the command that copies the rest;
#   - the narrowed window: SIGTSTP (^Z) clears the bar's row before kcopy
#     stops (no bar while it is stopped, and no progress), SIGCONT draws
#     it again on one row, and the copy ends byte-identical.
#
# Run by `make check`, or by hand: sudo KCOPY=./kcopy tests/test-kcopy-terminal.sh
# tmux runs on a socket of its own in the work directory.
# Needs root (tmpfs, losetup, FUSE), tmux, nbdkit and nbdfuse; exits 77
# (skipped) without them.

set -u

KCOPY=${KCOPY:-$(dirname "$0")/../kcopy}
# shellcheck source=kcopydfs-lib.sh
. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

[ "$(id -u)" = 0 ] || skip_all "needs root (tmpfs, loop devices, FUSE)"
[ -c /dev/fuse ] || skip_all "no /dev/fuse"
[ -x "$KCOPY" ] || skip_all "no kcopy at '$KCOPY' (set KCOPY)"
for tool in tmux nbdkit nbdfuse losetup cmp; do
	command -v "$tool" >/dev/null || skip_all "needs $tool"
done

# The server's socket in the work directory: gone with it.
setup_work 320M
socket=$work/tmux.sock
trap 'tmux -S "$socket" kill-server 2>/dev/null; cleanup' EXIT

# 256 reads of 256 KiB one after the other, 80 ms each: about 21 s.
SIZE=$((64 << 20))
slow_source 64M 80ms || skip_all "nbdfuse did not export a slow source: $(tail -n 3 "$work/nbdfuse.log" | tr '\n' '|')"
# Random bytes, kept in reference.img to compare with (reading the slow source again would take 20 s).
head -c "$SIZE" /dev/urandom >"$work/reference.img"
dd if="$work/reference.img" of="$slow_file" bs=1M conv=notrunc,fsync status=none ||
	fail "the slow source takes the reference bytes" "dd exit 0" "dd failed"
new_loop "$slow_file" || skip_all "losetup over the nbdfuse file failed"
source_dev=$loop_device

# start WINDOW COLUMNS DEST: kcopy in a new tmux session WINDOW of COLUMNS x 24;
# its pid goes to $work/WINDOW.pid, its exit status to the window as EXIT=N.
# It runs as an interactive shell's foreground job: job control on (set -m),
# kcopy in a process group of its own that owns the terminal (so SIGWINCH
# reaches it), not orphaned (so a SIGTSTP stops it: the kernel drops a
# terminal stop sent to an orphaned group).  Once stopped, it is the
# shell's background job: waited for until it is gone.
start() {
	local window=$1 columns=$2 dest=$3 command

	printf -v command 'set -m; sh -c %q; status=$?; pid=$(cat %q)
while kill -0 $pid 2>/dev/null; do
	if [ "$(cut -d" " -f3 /proc/$pid/stat)" = T ]; then sleep 0.1; else wait $pid; status=$?; fi
done
echo EXIT=$status; exec sleep 600' \
		"echo \$\$ >$work/$window.pid; exec $(printf '%q ' "$KCOPY" --subjob-kb 256 --depth 1 "$source_dev" "$dest")" \
		"$work/$window.pid"
	tmux -S "$socket" new-session -d -s "$window" -x "$columns" -y 24 bash -c "$command" ||
		skip_all "tmux cannot start a session"
	# A fixed size: no client is attached, and none may resize it.
	tmux -S "$socket" set-option -t "$window" window-size manual 2>/dev/null
}

# screen WINDOW [-J]: the window's rows now (-J: wrapped rows joined), blank ones left out.
screen() {
	tmux -S "$socket" capture-pane -p "${@:2}" -t "$1" | sed '/^ *$/d'
}

# bar_rows WINDOW: how many rows hold a progress bar or its percentage (not "kcopy:" lines).
bar_rows() {
	screen "$1" | grep -v '^kcopy:' | grep -Ec '[0-9]+\.[0-9]%'
}

# check_fit NAME WINDOW COLUMNS: one row of progress, no joined line wider than COLUMNS,
# and the bar's row at most COLUMNS - 1 wide.  Sets fit_failed on a failure.
check_fit() {
	local name=$1 window=$2 columns=$3 rows longest bar

	rows=$(bar_rows "$window")
	longest=$(screen "$window" -J | awk '{ if (length($0) > max) max = length($0) } END { print max + 0 }')
	bar=$(screen "$window" | grep -v '^kcopy:' | grep -E '[0-9]+\.[0-9]%' | tail -n 1)
	if [ "$rows" != 1 ] || [ "$longest" -gt "$columns" ] || [ "${#bar}" -ge "$columns" ]; then
		fail "$name" "1 row of progress, lines of at most $columns columns, the bar under $columns" \
			"$rows rows, the longest line $longest, the bar ${#bar}: $(screen "$window" -J | tr '\n' '|')"
		fit_failed=1
		return 1
	fi
	return 0
}

# pane_exit WINDOW: the EXIT=N the window printed, empty while kcopy runs.
pane_exit() {
	screen "$1" -J | sed -n 's/^EXIT=//p'
}

start wide 80 "$work/wide.img"
start narrow 40 "$work/narrow.img"

# Until both bars are up (the job's loop then takes the signals).
both_bars_up() {
	[ "$(bar_rows wide)" = 1 ] && [ "$(bar_rows narrow)" = 1 ]
}
wait_until 100 both_bars_up
wide_pid=$(cat "$work/wide.pid")
narrow_pid=$(cat "$work/narrow.pid")

# --- a few seconds of both bars -----------------------------------------------------

fit_failed=0
captures=0
for _ in $(seq 12); do
	check_fit "80 columns: the bar fits one row" wide 80 || break
	check_fit "40 columns: the bar fits one row" narrow 40 || break
	captures=$((captures + 1))
	sleep 0.25
done
[ "$fit_failed" = 0 ] && pass "80 and 40 columns: one row of progress, never wrapped ($captures captures each)"
bar80=$(screen wide | grep -E '^\[' | tail -n 1)
bar40=$(screen narrow | grep -E '^\[' | tail -n 1)
[[ $bar80 == *MB/s*ETA* ]] && pass "80 columns: the bar shows the rate and the ETA (${#bar80} columns)" ||
	fail "80 columns: the bar shows the rate and the ETA" "MB/s and ETA" "$bar80"
[[ $bar40 == *ETA* && $bar40 != *MB/s* ]] && pass "40 columns: the bar keeps the ETA, drops the rate (${#bar40} columns)" ||
	fail "40 columns: the bar keeps the ETA, drops the rate" "ETA without MB/s" "$bar40"

# --- SIGUSR1 at 80 columns, SIGHUP at 40 ----------------------------------------------

kill -USR1 "$wide_pid"
for _ in $(seq 20); do
	screen wide | grep -Eq '^kcopy: [0-9]+ of [0-9]+ bytes' && break
	sleep 0.1
done
usr1_line=$(screen wide -J | grep -E '^kcopy: [0-9]+ of [0-9]+ bytes')
if [[ $usr1_line =~ ^kcopy:\ [0-9]+\ of\ $SIZE\ bytes\ \([0-9.]+%\)\ done\ in\ [0-9.]+\ s,\ [0-9.]+\ MB/s,\ ETA\ [0-9]+:[0-9]{2}:[0-9]{2}$ ]]; then
	pass "SIGUSR1 prints one progress line: $usr1_line"
else
	fail "SIGUSR1 prints one progress line" "kcopy: N of $SIZE bytes (P%) done in ..." "$(screen wide -J | tr '\n' '|')"
fi
sleep 0.5
fit_failed=0
check_fit "80 columns after SIGUSR1: the bar has one row, below the line" wide 80 &&
	pass "80 columns after SIGUSR1: still one row of progress, the copy goes on"

kill -HUP "$narrow_pid"
pane_ended() {
	[ -n "$(pane_exit "$1")" ]
}
wait_until 100 pane_ended narrow
narrow_screen=$(screen narrow -J)
check "SIGHUP: exit 129 (128 + 1)" 129 "$(pane_exit narrow)"
if grep -Eq "^kcopy: cancelled by SIGHUP after [0-9]+ of $SIZE bytes$" <<<"$narrow_screen" &&
   grep -Eq "^kcopy: copied [0-9]+ of $SIZE bytes \([0-9]+ sectors\) to 1 destination in " <<<"$narrow_screen"; then
	pass "SIGHUP: the cancel and the summary are printed"
else
	fail "SIGHUP: the cancel and the summary are printed" "cancelled by SIGHUP, copied N of $SIZE" "$(tr '\n' '|' <<<"$narrow_screen")"
fi
resume=$(sed -n '/, run:$/{n;p}' <<<"$narrow_screen")
if [[ $resume =~ ^kcopy\ --subjob-kb\ 256\ --depth\ 1\ $source_dev:([0-9]+)\+([0-9]+)\ $work/narrow.img:([0-9]+)$ ]] &&
   [ "${BASH_REMATCH[1]}" = "${BASH_REMATCH[3]}" ] && [ $((BASH_REMATCH[1] + BASH_REMATCH[2])) = $((SIZE / 512)) ] &&
   [ "${BASH_REMATCH[1]}" -gt 0 ]; then
	pass "SIGHUP: the command that copies the rest is printed: $resume"
else
	fail "SIGHUP: the command that copies the rest is printed" \
		"kcopy --subjob-kb 256 --depth 1 $source_dev:C+REST $work/narrow.img:C" "$(tr '\n' '|' <<<"$narrow_screen")"
fi
# What it copied is the source's: the rest is the printed command's (tests/test-kcopy.sh runs one).
if [ -n "$resume" ]; then
	done_bytes=$((BASH_REMATCH[1] * 512))
	if cmp -n "$done_bytes" "$work/reference.img" "$work/narrow.img" >/dev/null 2>&1; then
		pass "SIGHUP: the $done_bytes bytes below the checkpoint are the source's"
	else
		fail "SIGHUP: the bytes below the checkpoint are the source's" "equal" \
			"$(cmp -n "$done_bytes" "$work/reference.img" "$work/narrow.img" 2>&1)"
	fi
fi

# --- the 80-column window narrowed to 40 while it copies ------------------------------

if [ -n "$(pane_exit wide)" ]; then
	fail "a resize while copying" "the copy at 80 columns still running" "it ended: $(screen wide -J | tr '\n' '|')"
else
	tmux -S "$socket" resize-window -t wide -x 40 -y 24
	sleep 0.6
	fit_failed=0
	for _ in $(seq 6); do
		check_fit "narrowed from 80 to 40 columns: the bar refits" wide 40 || break
		sleep 0.25
	done
	bar=$(screen wide | grep -E '^\[' | tail -n 1)
	[ "$fit_failed" = 0 ] && [[ $bar != *MB/s* ]] &&
		pass "narrowed from 80 to 40 columns: the bar refits on one row, nothing left of the wide one"
	[ "$fit_failed" = 0 ] && [[ $bar == *MB/s* ]] &&
		fail "narrowed from 80 to 40 columns: the bar refits" "a bar without MB/s" "$bar"
fi

# --- ^Z: SIGTSTP, then SIGCONT, in the narrowed window ---------------------------------

# stopped PID: its state is T (stopped).
stopped() {
	[ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" = T ]
}
if [ -n "$(pane_exit wide)" ]; then
	fail "SIGTSTP while copying" "the copy at 80 columns still running" "it ended: $(screen wide -J | tr '\n' '|')"
else
	kill -TSTP "$wide_pid"
	if wait_until 50 stopped "$wide_pid"; then
		sleep 0.5
		check "SIGTSTP: kcopy stops, its bar's row cleared first" 0 "$(bar_rows wide)"
		before=$(stat -c %s "$work/wide.img")
		sleep 1
		check "SIGTSTP: no progress while stopped (1 s)" "$before" "$(stat -c %s "$work/wide.img")"
	else
		fail "SIGTSTP: kcopy stops" "state T" "$(awk '{ print $3 }' "/proc/$wide_pid/stat" 2>&1)"
	fi
	kill -CONT "$wide_pid"
	bar_back() {
		[ "$(bar_rows wide)" = 1 ]
	}
	if wait_until 30 bar_back; then
		# check_fit without the shell's own "[1]+ Stopped COMMAND" line, wider than 40.
		fit_failed=0
		for _ in $(seq 4); do
			longest=$(screen wide -J | grep -v '^\[[0-9]*\][+-]* *Stopped' |
				awk '{ if (length($0) > max) max = length($0) } END { print max + 0 }')
			if [ "$(bar_rows wide)" != 1 ] || [ "$longest" -ge 40 ]; then
				fail "SIGCONT: the bar is drawn again on one row" "1 row of progress under 40 columns" \
					"$(bar_rows wide) rows, the longest line $longest: $(screen wide -J | tr '\n' '|')"
				fit_failed=1
				break
			fi
			sleep 0.25
		done
		[ "$fit_failed" = 0 ] && pass "SIGCONT: the bar is drawn again on one row of 40 columns"
	else
		fail "SIGCONT: the bar is drawn again" "1 row of progress" "$(screen wide -J | tr '\n' '|')"
	fi
fi

# --- the 80-column copy goes on to its end --------------------------------------------

wait_until 600 pane_ended wide
check "SIGUSR1: the copy still finishes (exit 0)" 0 "$(pane_exit wide)"
if cmp "$work/reference.img" "$work/wide.img" >/dev/null 2>&1; then
	pass "SIGUSR1: the destination equals the source"
else
	fail "SIGUSR1: the destination equals the source" "equal" "$(cmp "$work/reference.img" "$work/wide.img" 2>&1)"
fi
screen wide -J | grep -Eq "^kcopy: copied $SIZE bytes \($((SIZE / 512)) sectors\) to 1 destination in " &&
	pass "the summary at the end" || fail "the summary at the end" "kcopy: copied $SIZE bytes" "$(screen wide -J | tr '\n' '|')"
echo "the 80-column copy: $(screen wide -J | grep '^kcopy: copied')"

finish
