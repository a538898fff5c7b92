/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The daemon's messages: one function, kfs_log(), for every line kcopydfs
 * reports, so that where they go is decided in one place.  They go to
 * standard error ("kcopydfs: MESSAGE") until kfs_log_to_syslog() is called,
 * which main() does once the daemon has gone into the background (its
 * standard error is /dev/null then); from there on to syslog, with the
 * daemon's pid and the facility LOG_DAEMON.  With -f they stay on standard
 * error, which a service manager such as systemd puts in its journal.  When
 * kfs_log_init() finds that standard error is the journal ($JOURNAL_STREAM,
 * as systemd sets it), each line starts with "<N>", its syslog priority,
 * which the journal takes as the line's priority, and not with the program's
 * name, which the journal adds.
 *
 * Priorities are syslog(3)'s: LOG_ERR for a failure, LOG_WARNING for a
 * problem the daemon works around, LOG_NOTICE for a shutdown, LOG_INFO for
 * start and stop.  Nothing is filtered by priority.
 *
 * Thread-safe: each message is written with one call.
 */
#ifndef KCOPYDFS_LOG_H
#define KCOPYDFS_LOG_H

#include <syslog.h>

/* Look at $JOURNAL_STREAM: is standard error systemd's journal?  Call first. */
void kfs_log_init(void);

/* Send every later message to syslog ("kcopydfs[PID]", LOG_DAEMON) instead of standard error. */
void kfs_log_to_syslog(void);

/* Back to standard error; closes the syslog connection if there was one. */
void kfs_log_close(void);

/* Report one line (no newline needed) at @priority, one of syslog(3)'s LOG_* levels. */
void kfs_log(int priority, const char *format, ...) __attribute__((format(printf, 2, 3)));

#endif
