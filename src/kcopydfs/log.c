/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The daemon's messages, to standard error or to syslog: see log.h.
 */
#include "config.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>

#include "kcopydfs/log.h"

/* Set once by main() before the service starts its threads, read by all of them. */
static atomic_bool log_syslog;

void kfs_log_to_syslog(void)
{
	openlog("kcopydfs", LOG_PID, LOG_DAEMON);
	atomic_store(&log_syslog, true);
}

void kfs_log_close(void)
{
	if (atomic_exchange(&log_syslog, false))
		closelog();
}

void kfs_log(int priority, const char *format, ...)
{
	char line[1024];
	va_list args;

	va_start(args, format);
	if (atomic_load(&log_syslog)) {
		vsyslog(priority, format, args);
	} else {
		/* One call: stdio locks the stream for it, so lines from several threads do not mix. */
		vsnprintf(line, sizeof(line), format, args);
		fprintf(stderr, "kcopydfs: %s\n", line);
	}
	va_end(args);
}
