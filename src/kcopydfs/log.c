/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The daemon's messages, to standard error or to syslog: see log.h.
 */
#include "config.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kcopydfs/log.h"

/* Set by main() before the service starts its threads, read by all of them. */
static atomic_bool log_syslog;
static atomic_bool log_journal;	/* stderr is systemd's journal: "<N>" prefixes, no name */

void kfs_log_init(void)
{
	const char *stream = getenv("JOURNAL_STREAM");
	unsigned long long device, inode;
	struct stat st;

	/* systemd sets JOURNAL_STREAM to the dev:ino of the stream it connected (sd-daemon(3)). */
	if (stream && sscanf(stream, "%llu:%llu", &device, &inode) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
	    (unsigned long long)st.st_dev == device && (unsigned long long)st.st_ino == inode)
		atomic_store(&log_journal, true);
}

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
		if (atomic_load(&log_journal))
			fprintf(stderr, "<%d>%s\n", LOG_PRI(priority), line);
		else
			fprintf(stderr, "kcopydfs: %s\n", line);
	}
	va_end(args);
}
