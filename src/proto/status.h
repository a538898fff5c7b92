/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The status text of a kcopydfs job (MOUNT/jobs/NAME/status, kcopydfs(5)
 * STATUS) and its error line: one renderer, used by the daemon, and one
 * parser, used by kcopy --via and the tests, so the two cannot drift.
 * Pure functions: no I/O, no FUSE, no engine.
 *
 *   state: STATE
 *   progress: DONE/TOTAL
 *   read_err: 0|1
 *   write_err: 0xBITS
 *   error: none | none (cancelled) | FAILURE[; FAILURE...]
 *   bytes_per_sec: N
 *   elapsed: SECONDS
 *   owner: UID:GID
 *   rejected: none | REASON
 *   sectors_data: N          (added with sparse copies: after the first nine,
 *   sectors_zero: N           which readers may count on)
 *   sectors_offloaded: N
 *   checkpoint: N
 *
 *   FAILURE := read error on REGION sectors S+C: ENAME (message)
 *            | write error on REGION (to #N) sectors S+C: ENAME (message)
 *
 * REGION is the region's path or URI as the description gave it.
 */
#ifndef KCOPYD_PROTO_STATUS_H
#define KCOPYD_PROTO_STATUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kcopyd.h"

/* One job's status, as rendered or as parsed. */
struct proto_status {
	const char *state;		/* "idle", "queued", "running", "done", "failed", "cancelled", "interrupted" */
	uint64_t sectors_done;
	uint64_t sectors_total;
	int read_err;
	unsigned int write_err;		/* a bit per destination */
	const char *error;		/* the error line: "none", "none (cancelled)" or failures */
	double bytes_per_sec;
	double elapsed;			/* seconds */
	unsigned int uid, gid;
	const char *rejected;		/* "none" or the reason of the last refused write */
	/* The sparse counts and the checkpoint: a daemon before sparse copies has none. */
	bool has_counts;
	uint64_t sectors_data, sectors_zero, sectors_offloaded;
	bool has_checkpoint;
	uint64_t checkpoint;
};

/*
 * proto_status_render() - the status text of @status, every line of the
 * table above (has_counts and has_checkpoint are not looked at: the daemon
 * always writes them).  A NULL error, and a NULL or empty rejected, are
 * written as "none".
 * Return: the length the text needs, snprintf-like (it is cut to @len - 1).
 */
int proto_status_render(const struct proto_status *status, char *buf, size_t len);

/*
 * proto_status_parse() - read a status text back into @status.  @text is
 * changed in place: each line's newline becomes a NUL and the strings of
 * @status point into it.  Lines it does not know are skipped, so a newer
 * daemon's additions are read past.
 * Return: 0; -EPROTO when the state, progress, read_err, write_err or
 * error line is missing or malformed.  has_counts and has_checkpoint say
 * whether those lines were there and well-formed.
 */
int proto_status_parse(char *text, struct proto_status *status);

/*
 * proto_status_field() - the value of the "KEY: value" line of a status
 * text (unchanged), cut to @len - 1 bytes and NUL-terminated.
 * Return: true if the line is there.
 */
bool proto_status_field(const char *text, const char *key, char *value, size_t len);

/*
 * proto_is_final_state() - true for "done", "failed" and "cancelled", the
 * states a job does not leave.
 */
bool proto_is_final_state(const char *state);

/*
 * proto_failure_render() - the error line of a job's result: each read
 * and write failure as in the table above, "; " between them, the first
 * ones kept when @len is too small; "none", or "none (cancelled)", if
 * there is no failure.
 * @source_path: the source as the description named it (NULL: "?").
 * @dest_paths:  KCOPYD_MAX_REGIONS entries, those of failed destinations set.
 * Return: the length written.
 */
int proto_failure_render(const struct kcopyd_result *result, const char *source_path,
			 const char *const *dest_paths, char *buf, size_t len);

/*
 * proto_failure_append_said() - append "; PATH said: TEXT" to the error
 * line in @buf (of @len bytes): what the server of region @path (an NBD
 * export) said of its failure, its own words, which may hold anything.
 * These entries come after the failures, and last: the text runs to the
 * end of the line.  Nothing is appended to a full line.
 */
void proto_failure_append_said(char *buf, size_t len, const char *path, const char *text);

/*
 * proto_failure_parse() - split an error line into @result's read and
 * write failures (the ranges and errnos; read_err and write_err are left
 * as they are).  Each entry is matched against the region names given,
 * exactly, so a name may hold anything, "; " and " sectors " included.
 * An entry "PATH said: ..." (proto_failure_append_said()) ends the
 * failures: the rest of the line is a server's words.
 * @source_path: the source's name, or NULL for a zero job.
 * @dest_paths:  @num_dests names.
 * Return: true if every entry parsed, and then *@unparsed points at the
 * first "PATH said: " entry, or is NULL; false for a line with an entry
 * of another form (a flush failure, a line the daemon cut), and then
 * *@unparsed points at that entry.
 */
bool proto_failure_parse(const char *line, const char *source_path, const char *const *dest_paths,
			 unsigned int num_dests, struct kcopyd_result *result, const char **unparsed);

/* proto_errno_name() - "EIO" for EIO or -EIO; "E?" for an unknown number. */
const char *proto_errno_name(int error);

#endif /* KCOPYD_PROTO_STATUS_H */
