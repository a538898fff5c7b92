/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The status text of a job and its error line: rendered by the daemon,
 * parsed by kcopy --via (status.h has the format).  Pure functions.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/status.h"

const char *proto_errno_name(int error)
{
	const char *name = strerrorname_np(error < 0 ? -error : error);

	return name ? name : "E?";
}

/* The errno called @name ("EIO"), or 0 if none is. */
static int errno_by_name(const char *name, size_t name_len)
{
	for (int error = 1; error < 4096; error++) {
		const char *known = strerrorname_np(error);

		if (known && strlen(known) == name_len && strncmp(known, name, name_len) == 0)
			return error;
	}
	return 0;
}

static const char *or_none(const char *text)
{
	return text && *text ? text : "none";
}

/*
 * snprintf() at @used into @buf of @len bytes, counting past the end as
 * snprintf() does: returns the new @used.
 */
__attribute__((format(printf, 4, 5)))
static size_t append(char *buf, size_t len, size_t used, const char *fmt, ...)
{
	va_list ap;
	int written;

	va_start(ap, fmt);
	written = vsnprintf(used < len ? buf + used : NULL, used < len ? len - used : 0, fmt, ap);
	va_end(ap);
	return written < 0 ? used : used + (size_t)written;
}

/* The lines added with hashes, verification, pause and rate limits, after @used bytes. */
static size_t render_trust(const struct proto_status *status, char *buf, size_t len, size_t used)
{
	if (status->rate)
		used = append(buf, len, used, "rate: %" PRIu64 "\n", status->rate);
	else
		used = append(buf, len, used, "rate: none\n");
	for (unsigned int index = 0; index < KCOPYD_HASH_COUNT; index++) {
		unsigned int hash = 1u << index;
		const char *name = kcopyd_hash_name(hash);

		if (!(status->hashes & hash) || !name)
			continue;
		if (status->hash_state == PROTO_HASH_DONE) {
			char text[PROTO_DIGEST_TEXT_LEN];

			used = append(buf, len, used, "hash: %s\n",
				      proto_digest_render(hash, &status->digests[index], text, sizeof(text)));
			continue;
		}
		used = append(buf, len, used, "hash: %s:", name);
		if (status->hash_state == PROTO_HASH_NONE && status->hash_resumed_at) {
			used = append(buf, len, used, "none (resumed at sector %" PRIu64 ")\n", status->hash_resumed_at);
		} else {
			used = append(buf, len, used, "%s\n", status->hash_state == PROTO_HASH_NONE ? "none" : "pending");
		}
	}
	switch (status->verify) {
	case PROTO_VERIFY_PENDING:
		return append(buf, len, used, "verify: pending\n");
	case PROTO_VERIFY_RUNNING:
		return append(buf, len, used, "verify: running %" PRIu64 "/%" PRIu64 "\n", status->sectors_verified,
			      status->sectors_verify_total);
	case PROTO_VERIFY_OK:
		if (status->verify_from)
			return append(buf, len, used,
				      "verify: ok (sectors below %" PRIu64 " copied before the restart, not verified)\n",
				      status->verify_from);
		return append(buf, len, used, "verify: ok\n");
	case PROTO_VERIFY_MISMATCH:
		return append(buf, len, used, "verify: mismatch\n");
	case PROTO_VERIFY_NOT_DONE:
		return append(buf, len, used, "verify: not done\n");
	case PROTO_VERIFY_NONE:
	default:
		return append(buf, len, used, "verify: none\n");
	}
}

int proto_status_render(const struct proto_status *status, char *buf, size_t len)
{
	size_t used = append(buf, len, 0,
			"state: %s\n"
			"progress: %llu/%llu\n"
			"read_err: %d\n"
			"write_err: 0x%x\n"
			"error: %s\n"
			"bytes_per_sec: %.0f\n"
			"elapsed: %.3f\n"
			"owner: %u:%u\n"
			"rejected: %s\n"
			/* Added with sparse copies: after the first nine, which readers may count on. */
			"sectors_data: %llu\n"
			"sectors_zero: %llu\n"
			"sectors_offloaded: %llu\n"
			"checkpoint: %llu\n",
			status->state ? status->state : "unknown", (unsigned long long)status->sectors_done,
			(unsigned long long)status->sectors_total, status->read_err, status->write_err,
			status->error ? status->error : "none", status->bytes_per_sec, status->elapsed, status->uid, status->gid,
			or_none(status->rejected), (unsigned long long)status->sectors_data,
			(unsigned long long)status->sectors_zero, (unsigned long long)status->sectors_offloaded,
			(unsigned long long)status->checkpoint);

	used = render_trust(status, buf, len, used);
	return used > INT_MAX ? INT_MAX : (int)used;
}

/* A whole decimal number, nothing around it. */
static bool read_u64(const char *text, int base, uint64_t *value)
{
	char *end;

	if (!*text || *text == '-' || *text == '+' || *text == ' ')
		return false;
	errno = 0;
	*value = strtoull(text, &end, base);
	return !*end && errno == 0;
}

/* "DONE/TOTAL" */
static bool read_progress(const char *text, uint64_t *done, uint64_t *total)
{
	const char *slash = strchr(text, '/');
	char digits[32];
	size_t done_len;

	if (!slash || (done_len = (size_t)(slash - text)) >= sizeof(digits))
		return false;
	memcpy(digits, text, done_len);
	digits[done_len] = '\0';
	return read_u64(digits, 10, done) && read_u64(slash + 1, 10, total);
}

const char *proto_digest_render(unsigned int hash, const struct kcopyd_digest *digest, char *buf, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const char *name = kcopyd_hash_name(hash);
	size_t at;
	int head;

	if (len == 0)
		return buf;
	head = snprintf(buf, len, "%s:", name ? name : "?");
	at = head < 0 ? 0 : (size_t)head < len ? (size_t)head : len - 1;
	for (unsigned int byte = 0; byte < digest->size && byte < KCOPYD_HASH_MAX_SIZE && at + 2 < len; byte++) {
		buf[at++] = hex[digest->bytes[byte] >> 4];
		buf[at++] = hex[digest->bytes[byte] & 0xf];
	}
	buf[at] = '\0';
	return buf;
}

/* The value of one hex digit, or -1. */
static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* "ALG:HEX", "ALG:pending", "ALG:none" or "ALG:none (resumed at sector N)"; false for anything else. */
static bool read_hash(char *value, struct proto_status *status)
{
	char *colon = strchr(value, ':'), *what;
	unsigned long long sector;
	unsigned int hash, index;
	int consumed = 0;

	if (!colon)
		return false;
	*colon = '\0';
	what = colon + 1;
	if (kcopyd_hash_parse(value, &hash) < 0) {
		*colon = ':';
		return false;
	}
	*colon = ':';
	for (index = 0; !(hash >> index & 1); index++)
		;
	if (!strcmp(what, "pending")) {
		status->hash_state = PROTO_HASH_PENDING;
	} else if (!strcmp(what, "none")) {
		status->hash_state = PROTO_HASH_NONE;
	} else if (sscanf(what, "none (resumed at sector %llu)%n", &sector, &consumed) == 1 && consumed > 0 &&
		   what[consumed] == '\0') {
		status->hash_state = PROTO_HASH_NONE;
		status->hash_resumed_at = sector;
	} else {
		struct kcopyd_digest *digest = &status->digests[index];
		size_t hex_len = strlen(what);

		if (hex_len != 2 * (size_t)kcopyd_hash_size(hash))
			return false;
		for (size_t byte = 0; byte < hex_len / 2; byte++) {
			int high = hex_value(what[2 * byte]), low = hex_value(what[2 * byte + 1]);

			if (high < 0 || low < 0)
				return false;
			digest->bytes[byte] = (unsigned char)(high << 4 | low);
		}
		digest->size = (unsigned int)(hex_len / 2);
		status->hash_state = PROTO_HASH_DONE;
	}
	status->hashes |= hash;
	return true;
}

/* The verify: line's value into @status; false if it is none of its forms. */
static bool read_verify(const char *value, struct proto_status *status)
{
	unsigned long long below;
	int consumed = 0;

	if (!strcmp(value, "none"))
		status->verify = PROTO_VERIFY_NONE;
	else if (!strcmp(value, "pending"))
		status->verify = PROTO_VERIFY_PENDING;
	else if (!strcmp(value, "ok"))
		status->verify = PROTO_VERIFY_OK;
	else if (!strcmp(value, "mismatch"))
		status->verify = PROTO_VERIFY_MISMATCH;
	else if (!strcmp(value, "not done"))
		status->verify = PROTO_VERIFY_NOT_DONE;
	else if (!strncmp(value, "running ", 8) &&
		 read_progress(value + 8, &status->sectors_verified, &status->sectors_verify_total))
		status->verify = PROTO_VERIFY_RUNNING;
	else if (sscanf(value, "ok (sectors below %llu copied before the restart, not verified)%n", &below,
			&consumed) == 1 && consumed > 0 && value[consumed] == '\0') {
		status->verify = PROTO_VERIFY_OK;
		status->verify_from = below;
	} else
		return false;
	return true;
}

int proto_status_parse(char *text, struct proto_status *status)
{
	bool have_state = false, have_progress = false, have_read_err = false, have_write_err = false;
	bool have_data = false, have_zero = false, have_offloaded = false;
	uint64_t number;
	char *line = text;

	memset(status, 0, sizeof(*status));
	while (line && *line) {
		char *newline = strchr(line, '\n');
		char *colon, *value;

		if (newline)
			*newline = '\0';
		colon = strstr(line, ": ");	/* in this line only: after the cut */
		if (!colon)
			goto next;
		*colon = '\0';
		value = colon + 2;
		if (!strcmp(line, "state")) {
			status->state = value;
			have_state = *value != '\0';
		} else if (!strcmp(line, "progress")) {
			have_progress = read_progress(value, &status->sectors_done, &status->sectors_total);
		} else if (!strcmp(line, "read_err")) {
			have_read_err = read_u64(value, 10, &number) && number <= 1;
			status->read_err = (int)number;
		} else if (!strcmp(line, "write_err")) {
			have_write_err = !strncmp(value, "0x", 2) && read_u64(value + 2, 16, &number) &&
					 number <= UINT32_MAX;
			status->write_err = (unsigned int)number;
		} else if (!strcmp(line, "error")) {
			status->error = value;
		} else if (!strcmp(line, "bytes_per_sec")) {
			status->bytes_per_sec = strtod(value, NULL);
		} else if (!strcmp(line, "elapsed")) {
			status->elapsed = strtod(value, NULL);
		} else if (!strcmp(line, "owner")) {
			if (sscanf(value, "%u:%u", &status->uid, &status->gid) != 2)
				status->uid = status->gid = 0;
		} else if (!strcmp(line, "rejected")) {
			status->rejected = value;
		} else if (!strcmp(line, "sectors_data")) {
			have_data = read_u64(value, 10, &status->sectors_data);
		} else if (!strcmp(line, "sectors_zero")) {
			have_zero = read_u64(value, 10, &status->sectors_zero);
		} else if (!strcmp(line, "sectors_offloaded")) {
			have_offloaded = read_u64(value, 10, &status->sectors_offloaded);
		} else if (!strcmp(line, "checkpoint")) {
			status->has_checkpoint = read_u64(value, 10, &status->checkpoint);
		} else if (!strcmp(line, "rate")) {
			status->rate = 0;
			status->has_rate = !strcmp(value, "none") || (read_u64(value, 10, &status->rate) && status->rate);
		} else if (!strcmp(line, "hash")) {
			(void)read_hash(value, status);
		} else if (!strcmp(line, "verify")) {
			status->has_verify = read_verify(value, status);
		}
next:
		line = newline ? newline + 1 : NULL;
	}
	status->has_counts = have_data && have_zero && have_offloaded;
	if (!have_state || !have_progress || !have_read_err || !have_write_err || !status->error)
		return -EPROTO;
	return 0;
}

bool proto_status_field(const char *text, const char *key, char *value, size_t len)
{
	size_t key_len = strlen(key);

	for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		if (strncmp(line, key, key_len) == 0 && line[key_len] == ':' && line[key_len + 1] == ' ') {
			const char *start = line + key_len + 2;
			size_t value_len = strcspn(start, "\n");

			if (len == 0)
				return true;
			if (value_len >= len)
				value_len = len - 1;
			memcpy(value, start, value_len);
			value[value_len] = '\0';
			return true;
		}
	}
	return false;
}

bool proto_is_final_state(const char *state)
{
	return state && (!strcmp(state, "done") || !strcmp(state, "failed") || !strcmp(state, "cancelled"));
}

static int append_failure(char *buf, size_t len, size_t used, const char *what, const char *path, int dest_index,
			  const struct kcopyd_failure *failure)
{
	char where[32] = "";
	int written;

	if (dest_index >= 0)
		snprintf(where, sizeof(where), " (to #%d)", dest_index);
	if (used >= len)
		return 0;	/* the line is full: the first failures are the ones that show */
	written = snprintf(buf + used, len - used, "%s%s error on %s%s sectors %llu+%llu: %s (%s)",
			   used ? "; " : "", what, path ? path : "?", where, (unsigned long long)failure->sector,
			   (unsigned long long)failure->count, proto_errno_name(failure->error),
			   strerror(-failure->error));
	return written < 0 ? 0 : written;
}

int proto_failure_render(const struct kcopyd_result *result, const char *source_path,
			 const char *const *dest_paths, char *buf, size_t len)
{
	size_t used = 0;
	int dest_index;

	if (len)
		buf[0] = '\0';
	if (result->read.error)
		used += (size_t)append_failure(buf, len, used, "read", source_path, -1, &result->read);
	for (dest_index = 0; dest_index < KCOPYD_MAX_REGIONS; dest_index++)
		if (result->write[dest_index].error)
			used += (size_t)append_failure(buf, len, used, "write", dest_paths[dest_index], dest_index,
						       &result->write[dest_index]);
	/* What the read-back found: after the copy's own failures, as it came after the copy. */
	for (dest_index = 0; dest_index < KCOPYD_MAX_REGIONS; dest_index++)
		if ((result->verify_err >> dest_index & 1) && result->verify[dest_index].error)
			used += (size_t)append_failure(buf, len, used, "verify", dest_paths[dest_index], dest_index,
						       &result->verify[dest_index]);
	if (used == 0)
		return snprintf(buf, len, "%s", result->cancelled ? "none (cancelled)" : "none");
	return (int)used;
}

/*
 * Read "SECTOR+COUNT: ENAME (message)" at @text into @failure.
 * Return: the text after the closing parenthesis, or NULL for another form.
 */
static const char *parse_failure(const char *text, struct kcopyd_failure *failure)
{
	unsigned long long sector, count;
	const char *name, *close_paren;
	int consumed = 0;
	size_t name_len;

	if (sscanf(text, "%llu+%llu: %n", &sector, &count, &consumed) != 2 || !consumed)
		return NULL;
	name = text + consumed;
	name_len = strcspn(name, " ");
	if (name[name_len] != ' ' || name[name_len + 1] != '(')
		return NULL;
	close_paren = strchr(name + name_len, ')');
	failure->error = -errno_by_name(name, name_len);
	if (!close_paren || !failure->error)
		return NULL;
	failure->sector = sector;
	failure->count = count;
	return close_paren + 1;
}

/* @text starts with @prefix_a, @name, @prefix_b: the text after them, or NULL. */
static const char *skip_entry_head(const char *text, const char *what, const char *name, const char *after)
{
	size_t what_len = strlen(what), name_len = strlen(name), after_len = strlen(after);

	if (strncmp(text, what, what_len) || strncmp(text + what_len, name, name_len) ||
	    strncmp(text + what_len + name_len, after, after_len))
		return NULL;
	return text + what_len + name_len + after_len;
}

void proto_failure_append_said(char *buf, size_t len, const char *path, const char *text)
{
	size_t used = strnlen(buf, len);

	if (used + 1 >= len)
		return;
	snprintf(buf + used, len - used, "%s%s said: %s", used ? "; " : "", path ? path : "?", text);
}

/* @text is "PATH said: " for one of the regions named. */
static bool is_said_entry(const char *text, const char *source_path, const char *const *dest_paths,
			  unsigned int num_dests)
{
	if (source_path && skip_entry_head(text, "", source_path, " said: "))
		return true;
	for (unsigned int dest_index = 0; dest_index < num_dests && dest_index < KCOPYD_MAX_REGIONS; dest_index++)
		if (skip_entry_head(text, "", dest_paths[dest_index], " said: "))
			return true;
	return false;
}

bool proto_failure_parse(const char *line, const char *source_path, const char *const *dest_paths,
			 unsigned int num_dests, struct kcopyd_result *result, const char **unparsed)
{
	const char *at = line;

	if (unparsed)
		*unparsed = NULL;
	while (*at) {
		const char *rest = NULL, *numbers;

		/* A server's words: last on the line, and anything may be in them. */
		if (at != line && is_said_entry(at, source_path, dest_paths, num_dests)) {
			if (unparsed)
				*unparsed = at;
			return true;
		}

		if (source_path) {
			numbers = skip_entry_head(at, "read error on ", source_path, " sectors ");
			if (numbers)
				rest = parse_failure(numbers, &result->read);
		}
		for (unsigned int dest_index = 0; !rest && dest_index < num_dests && dest_index < KCOPYD_MAX_REGIONS;
		     dest_index++) {
			char after[48];

			snprintf(after, sizeof(after), " (to #%u) sectors ", dest_index);
			numbers = skip_entry_head(at, "write error on ", dest_paths[dest_index], after);
			if (numbers)
				rest = parse_failure(numbers, &result->write[dest_index]);
			numbers = rest ? NULL : skip_entry_head(at, "verify error on ", dest_paths[dest_index], after);
			if (numbers && (rest = parse_failure(numbers, &result->verify[dest_index])))
				result->verify_err |= 1u << dest_index;
		}
		if (!rest || (*rest && strncmp(rest, "; ", 2) != 0)) {
			if (unparsed)
				*unparsed = at;
			return false;
		}
		at = *rest ? rest + 2 : rest;
	}
	return true;
}
