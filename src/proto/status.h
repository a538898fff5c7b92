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
 *   rate: BYTES | none       (added with hashes, verification, pause and
 *   hash: ALG:HEX             rate limits: one hash: line per algorithm,
 *       | ALG:pending         none without hash=; old daemons write none
 *       | ALG:none            of these lines, and readers must not need them)
 *       | ALG:none (resumed at sector N)
 *   verify: none | pending | running DONE/TOTAL | ok | mismatch | not done
 *         | ok (sectors below C copied before the restart, not verified)
 *
 *   FAILURE := read error on REGION sectors S+C: ENAME (message)
 *            | write error on REGION (to #N) sectors S+C: ENAME (message)
 *            | verify error on REGION (to #N) sectors S+C: ENAME (message)
 *
 * REGION is the region's path or URI as the description gave it.
 */
#ifndef KCOPYD_PROTO_STATUS_H
#define KCOPYD_PROTO_STATUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kcopyd.h"

/* What a hash: line says of its algorithm. */
enum proto_hash_state {
	PROTO_HASH_PENDING,		/* ALG:pending: the job has not ended */
	PROTO_HASH_DONE,		/* ALG:HEX: digests[] holds it */
	PROTO_HASH_NONE,		/* ALG:none: it ended before every chunk was hashed, or was resumed */
};

/* What the verify: line says. */
enum proto_verify {
	PROTO_VERIFY_NONE,		/* "none": not asked (no flags=verify) */
	PROTO_VERIFY_PENDING,		/* "pending": still copying */
	PROTO_VERIFY_RUNNING,		/* "running DONE/TOTAL": reading back (flushing counts as 0/TOTAL) */
	PROTO_VERIFY_OK,		/* "ok": every destination read back as the source */
	PROTO_VERIFY_MISMATCH,		/* "mismatch": the error line has a verify error per destination */
	PROTO_VERIFY_NOT_DONE,		/* "not done": the copy failed or was cancelled first */
};

/* One job's status, as rendered or as parsed. */
struct proto_status {
	const char *state;		/* "idle", "queued", "running", "paused", "done", "failed", "cancelled",
					 * "interrupted" */
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
	/*
	 * Added with hashes, verification, pause and rate limits.  The
	 * renderer always writes rate: and verify: and one hash: line per
	 * bit of hashes; the parser sets has_rate and has_verify when their
	 * lines were there and well-formed (a daemon before them has none).
	 */
	bool has_rate;
	uint64_t rate;			/* bytes per second; 0: "none" */
	unsigned int hashes;		/* KCOPYD_HASH_* bits, one hash: line each */
	enum proto_hash_state hash_state;	/* of every algorithm: the engine gives all digests or none */
	uint64_t hash_resumed_at;	/* PROTO_HASH_NONE of a resumed job: the sector it resumed at (> 0) */
	struct kcopyd_digest digests[KCOPYD_HASH_COUNT];	/* digests[i]: of bit i, when PROTO_HASH_DONE */
	bool has_verify;
	enum proto_verify verify;
	uint64_t sectors_verified, sectors_verify_total;	/* PROTO_VERIFY_RUNNING */
	uint64_t verify_from;		/* PROTO_VERIFY_OK of a job resumed at this sector (> 0): what is
					 * below it was copied before the restart and not verified */
};

/*
 * proto_status_render() - the status text of @status, every line of the
 * table above (has_counts, has_checkpoint, has_rate and has_verify are not
 * looked at: the daemon always writes them; the hash: lines are those of
 * hashes, in bit order, with kcopyd_hash_name()'s names and lowercase hex).  A NULL error, and a NULL or empty rejected, are
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
 * whether those lines were there and well-formed, as has_rate and
 * has_verify do of theirs.  A hash: line of an unknown algorithm, or one
 * that does not parse, is skipped; hash_state is the last line's.
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
 * states a job does not leave ("paused" is not one: a paused job goes on
 * when resumed).
 */
bool proto_is_final_state(const char *state);

/*
 * proto_failure_render() - the error line of a job's result: each read,
 * write and verify failure (result.verify[i] of a destination whose bit
 * is in verify_err) as in the table above, "; " between them, in that
 * order, the first ones kept when @len is too small; "none", or "none
 * (cancelled)", if there is no failure.
 * @source_path: the source as the description named it (NULL: "?").
 * @dest_paths:  KCOPYD_MAX_REGIONS entries, those of failed destinations set
 *               (write or verify).
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
 * proto_failure_parse() - split an error line into @result's read,
 * write and verify failures (the ranges and errnos; read_err and
 * write_err are left as they are; a verify entry sets its destination's
 * bit in verify_err, which no other line gives).  Each entry is matched against the region names given,
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

/* Room for proto_digest_render(): a name and 64 bytes in hex. */
#define PROTO_DIGEST_TEXT_LEN (16 + 2 * KCOPYD_HASH_MAX_SIZE + 1)

/*
 * proto_digest_render() - "ALG:HEX" of one digest, lowercase, as the
 * status's "hash:" line, kcopy's summary and the *sum tools write it, cut
 * to @len - 1 bytes.
 * @hash: the algorithm's bit (KCOPYD_HASH_*).
 * Return: @buf.
 */
const char *proto_digest_render(unsigned int hash, const struct kcopyd_digest *digest, char *buf, size_t len);

/* proto_errno_name() - "EIO" for EIO or -EIO; "E?" for an unknown number. */
const char *proto_errno_name(int error);

#endif /* KCOPYD_PROTO_STATUS_H */
