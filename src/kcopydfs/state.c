/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Job records for --state-dir: rendering, parsing and the directory of
 * record files.  See state.h for the format and the guarantees.
 */
#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kcopydfs/state.h"

#define HEADER "kcopydfs-state 2\n"
#define HEADER_V1 "kcopydfs-state 1\n"	/* without groups, caps and view */
#define SUM_KEY "sum: "
#define SUM_DIGITS 16
#define RECORD_SUFFIX ".job"
#define TEMP_PREFIX ".tmp-"

struct kfs_state_dir {
	int dir_fd;
	int lock_fd;
};

/* FNV-1a, 64 bits: enough to tell a damaged record, not meant against forgery. */
static uint64_t checksum(const char *text, size_t len)
{
	uint64_t hash = 0xcbf29ce484222325ull;
	size_t index;

	for (index = 0; index < len; index++)
		hash = (hash ^ (unsigned char)text[index]) * 0x100000001b3ull;
	return hash;
}

__attribute__((format(printf, 3, 4)))
static int refuse(char *why, size_t why_len, const char *fmt, ...)
{
	va_list ap;

	if (why_len) {
		va_start(ap, fmt);
		vsnprintf(why, why_len, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static bool one_line(const char *text)
{
	return strchr(text, '\n') == NULL;
}

/* The groups line's value: the ids separated by spaces, "-" for none.  Return: its length, or -ENOSPC. */
static int render_groups(const struct kfs_record *record, char *buf, size_t len)
{
	size_t used = 0;
	unsigned int index;
	int r;

	if (record->group_count == 0)
		return snprintf(buf, len, "-");
	for (index = 0; index < record->group_count; index++) {
		r = snprintf(buf + used, len - used, "%s%u", index ? " " : "", (unsigned int)record->groups[index]);
		if (r < 0 || (size_t)r >= len - used)
			return -ENOSPC;
		used += (size_t)r;
	}
	return (int)used;
}

/* The view line's value ("unknown" for a job restored from a version 1 record). */
static void render_view(const struct kfs_record *record, char *buf, size_t len)
{
	const struct kfs_view *view = &record->view;

	if (!record->identity_known)
		snprintf(buf, len, "unknown");
	else if (view->daemon)
		snprintf(buf, len, "daemon");
	else
		snprintf(buf, len, "mnt:%" PRIu64 " root:%" PRIu64 ":%" PRIu64, view->mnt_ns, view->root_dev,
			 view->root_ino);
}

int kfs_record_render(const struct kfs_record *record, char *buf, size_t len)
{
	char groups[KFS_MAX_GROUPS * 11 + 2], view[96];
	int body, total;

	if (!kfs_name_valid(record->name) || !one_line(record->state) || !one_line(record->error) ||
	    !one_line(record->description) || record->state[0] == '\0' || record->group_count > KFS_MAX_GROUPS)
		return -EINVAL;
	if (render_groups(record, groups, sizeof(groups)) < 0)
		return -EINVAL;
	render_view(record, view, sizeof(view));
	body = snprintf(buf, len,
			HEADER
			"id: %" PRIu64 "\n"
			"name: %s\n"
			"owner: %u:%u\n"
			"groups: %s\n"
			"caps: %016" PRIx64 "\n"
			"view: %s\n"
			"state: %s\n"
			"total: %" PRIu64 "\n"
			"checkpoint: %" PRIu64 "\n"
			"error: %s\n"
			"description: %s\n",
			record->id, record->name, (unsigned int)record->uid, (unsigned int)record->gid, groups,
			record->caps, view, record->state, record->sectors_total, record->checkpoint, record->error,
			record->description);
	if (body < 0 || (size_t)body >= len)
		goto too_small;
	total = body + snprintf(buf + body, len - (size_t)body, SUM_KEY "%016" PRIx64 "\n",
				checksum(buf, (size_t)body));
	if ((size_t)total >= len)
		goto too_small;
	return total;

too_small:
	if (len)
		buf[0] = '\0';
	return -ENOSPC;
}

/* A decimal number that fits in 64 bits, the whole of [text, text + len). */
static bool parse_u64(const char *text, size_t len, uint64_t *value)
{
	uint64_t result = 0;
	size_t index;

	if (len == 0 || len > 20)
		return false;
	for (index = 0; index < len; index++) {
		unsigned int digit = (unsigned int)(text[index] - '0');

		if (digit > 9 || result > (UINT64_MAX - digit) / 10)
			return false;
		result = result * 10 + digit;
	}
	*value = result;
	return true;
}

/* Copy the value [text, text + len) into @out (@size bytes) if it fits. */
static bool copy_value(char *out, size_t size, const char *text, size_t len)
{
	if (len >= size)
		return false;
	memcpy(out, text, len);
	out[len] = '\0';
	return true;
}

/* The groups line's value into @record.  Return: true if it is "-" or up to KFS_MAX_GROUPS ids. */
static bool parse_groups(const char *value, size_t len, struct kfs_record *record)
{
	const char *end = value + len;

	record->group_count = 0;
	if (len == 1 && value[0] == '-')
		return true;
	while (value < end) {
		const char *space = memchr(value, ' ', (size_t)(end - value));
		size_t id_len = space ? (size_t)(space - value) : (size_t)(end - value);
		uint64_t id;

		if (!parse_u64(value, id_len, &id) || id > UINT32_MAX - 1 || record->group_count == KFS_MAX_GROUPS)
			return false;
		record->groups[record->group_count++] = (gid_t)id;
		value += id_len + (space ? 1 : 0);
		if (space && value == end)
			return false;	/* a trailing space */
	}
	return record->group_count > 0;
}

/* "daemon", "mnt:INO root:DEV:INO", or "unknown" (then the owner's identity is not known). */
static bool parse_view(const char *value, size_t len, struct kfs_record *record)
{
	struct kfs_view *view = &record->view;
	char text[96], tail;
	unsigned long long mnt_ns, root_dev, root_ino;

	memset(view, 0, sizeof(*view));
	if (len == 7 && memcmp(value, "unknown", 7) == 0) {
		record->identity_known = false;
		return true;
	}
	if (len == 6 && memcmp(value, "daemon", 6) == 0) {
		view->daemon = true;
		return true;
	}
	if (!copy_value(text, sizeof(text), value, len) ||
	    sscanf(text, "mnt:%llu root:%llu:%llu%c", &mnt_ns, &root_dev, &root_ino, &tail) != 3 ||
	    text[4] < '0' || text[4] > '9')
		return false;
	view->mnt_ns = mnt_ns;
	view->root_dev = root_dev;
	view->root_ino = root_ino;
	return true;
}

int kfs_record_parse(const char *text, size_t len, struct kfs_record *record, char *why, size_t why_len)
{
	static const char *const keys[] = { "id", "name", "owner", "groups", "caps", "view", "state", "total",
					    "checkpoint", "error", "description" };
	const char *pos, *end = text + len, *sum_line;
	uint64_t stored_sum, owner_uid, owner_gid;
	unsigned int key_index, line = 2;
	bool version_1;

	memset(record, 0, sizeof(*record));
	version_1 = len >= sizeof(HEADER_V1) - 1 && memcmp(text, HEADER_V1, sizeof(HEADER_V1) - 1) == 0;
	if (!version_1 && (len < sizeof(HEADER) - 1 || memcmp(text, HEADER, sizeof(HEADER) - 1) != 0))
		return refuse(why, why_len, "not a kcopydfs-state 1 or 2 record (bad first line)");
	record->identity_known = !version_1;
	if (memchr(text, '\0', len))
		return refuse(why, why_len, "holds a NUL byte");
	/* The checksum line is the last line, and covers everything before it. */
	if (len < sizeof(SUM_KEY) + SUM_DIGITS || text[len - 1] != '\n')
		return refuse(why, why_len, "cut short (no final checksum line)");
	sum_line = end - (sizeof(SUM_KEY) - 1 + SUM_DIGITS + 1);
	if (sum_line < text + sizeof(HEADER) - 1 || sum_line[-1] != '\n' ||
	    memcmp(sum_line, SUM_KEY, sizeof(SUM_KEY) - 1) != 0)
		return refuse(why, why_len, "cut short (no final checksum line)");
	{
		char digits[SUM_DIGITS + 1], *digits_end;

		memcpy(digits, sum_line + sizeof(SUM_KEY) - 1, SUM_DIGITS);
		digits[SUM_DIGITS] = '\0';
		stored_sum = strtoull(digits, &digits_end, 16);
		if (digits_end != digits + SUM_DIGITS)
			return refuse(why, why_len, "the checksum line is not 16 hex digits");
	}
	if (stored_sum != checksum(text, (size_t)(sum_line - text)))
		return refuse(why, why_len, "checksum mismatch: the record was changed or damaged");

	pos = text + sizeof(HEADER) - 1;
	for (key_index = 0; key_index < sizeof(keys) / sizeof(keys[0]); key_index++) {
		const char *line_end;
		size_t key_len = strlen(keys[key_index]);
		const char *value;
		size_t value_len;

		if (version_1 && key_index >= 3 && key_index <= 5)
			continue;	/* groups, caps and view came with version 2 */
		line_end = memchr(pos, '\n', (size_t)(sum_line - pos));

		if (!line_end || (size_t)(line_end - pos) < key_len + 2 || memcmp(pos, keys[key_index], key_len) != 0 ||
		    pos[key_len] != ':' || pos[key_len + 1] != ' ')
			return refuse(why, why_len, "line %u: expected '%s: ...'", line, keys[key_index]);
		value = pos + key_len + 2;
		value_len = (size_t)(line_end - value);
		switch (key_index) {
		case 0:
			if (!parse_u64(value, value_len, &record->id) || record->id == 0)
				return refuse(why, why_len, "id: not a job id");
			break;
		case 1:
			if (!copy_value(record->name, sizeof(record->name), value, value_len) ||
			    !kfs_name_valid(record->name))
				return refuse(why, why_len, "name: not a job name");
			break;
		case 2: {
			const char *colon = memchr(value, ':', value_len);

			if (!colon || !parse_u64(value, (size_t)(colon - value), &owner_uid) ||
			    !parse_u64(colon + 1, value_len - (size_t)(colon - value) - 1, &owner_gid) ||
			    owner_uid > UINT32_MAX - 1 || owner_gid > UINT32_MAX - 1)
				return refuse(why, why_len, "owner: not UID:GID");
			record->uid = (uid_t)owner_uid;
			record->gid = (gid_t)owner_gid;
			break;
		}
		case 3:
			if (!parse_groups(value, value_len, record))
				return refuse(why, why_len, "groups: not '-' or up to %u group ids", KFS_MAX_GROUPS);
			break;
		case 4: {
			size_t digit;

			record->caps = 0;
			for (digit = 0; digit < value_len && isxdigit((unsigned char)value[digit]); digit++)
				record->caps = record->caps << 4 |
					       (uint64_t)(isdigit((unsigned char)value[digit]) ? value[digit] - '0'
											   : (value[digit] | 0x20) - 'a' + 10);
			if (value_len != 16 || digit != 16)
				return refuse(why, why_len, "caps: not 16 hex digits");
			break;
		}
		case 5:
			if (!parse_view(value, value_len, record))
				return refuse(why, why_len, "view: not 'daemon', 'unknown' or 'mnt:INO root:DEV:INO'");
			break;
		case 6:
			if (value_len == 0 || !copy_value(record->state, sizeof(record->state), value, value_len))
				return refuse(why, why_len, "state: not a state name");
			break;
		case 7:
			if (!parse_u64(value, value_len, &record->sectors_total))
				return refuse(why, why_len, "total: not a number of sectors");
			break;
		case 8:
			if (!parse_u64(value, value_len, &record->checkpoint) ||
			    record->checkpoint > record->sectors_total)
				return refuse(why, why_len, "checkpoint: not a number of sectors up to the total");
			break;
		case 9:
			if (!copy_value(record->error, sizeof(record->error), value, value_len))
				return refuse(why, why_len, "error: too long");
			break;
		case 10:
			if (!copy_value(record->description, sizeof(record->description), value, value_len))
				return refuse(why, why_len, "description: too long");
			break;
		}
		pos = line_end + 1;
		line++;
	}
	if (pos != sum_line)
		return refuse(why, why_len, "an unknown line before the checksum");
	return 0;
}

/* ------------------------------------------------------------------ */
/* The directory                                                       */
/* ------------------------------------------------------------------ */

static void record_file_name(uint64_t id, char *buf, size_t len)
{
	snprintf(buf, len, "%" PRIu64 RECORD_SUFFIX, id);
}

/* The id in a record file's name ("42.job"), or 0 if it is no record's name. */
static uint64_t record_id_of(const char *name)
{
	size_t len = strlen(name), suffix_len = strlen(RECORD_SUFFIX);
	uint64_t id;

	if (len <= suffix_len || strcmp(name + len - suffix_len, RECORD_SUFFIX) != 0 ||
	    !parse_u64(name, len - suffix_len, &id))
		return 0;
	return id;
}

int kfs_state_dir_open(const char *dir, struct kfs_state_dir **result)
{
	struct kfs_state_dir *state;
	struct dirent *entry;
	DIR *listing;
	int r, fd;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	state = calloc(1, sizeof(*state));
	if (!state)
		return -ENOMEM;
	state->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (state->dir_fd < 0) {
		r = -errno;
		goto err_free;
	}
	state->lock_fd = openat(state->dir_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (state->lock_fd < 0) {
		r = -errno;
		goto err_close_dir;
	}
	if (flock(state->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		r = errno == EWOULDBLOCK ? -EBUSY : -errno;
		goto err_close_lock;
	}
	/* A crash between writing a temporary record and renaming it leaves the temporary. */
	fd = dup(state->dir_fd);
	listing = fd < 0 ? NULL : fdopendir(fd);
	if (!listing) {
		if (fd >= 0)
			close(fd);
	} else {
		while ((entry = readdir(listing)))
			if (strncmp(entry->d_name, TEMP_PREFIX, strlen(TEMP_PREFIX)) == 0)
				unlinkat(state->dir_fd, entry->d_name, 0);
		closedir(listing);
	}
	*result = state;
	return 0;

err_close_lock:
	close(state->lock_fd);
err_close_dir:
	close(state->dir_fd);
err_free:
	free(state);
	return r;
}

void kfs_state_dir_close(struct kfs_state_dir *state)
{
	if (!state)
		return;
	close(state->lock_fd);	/* drops the flock */
	close(state->dir_fd);
	free(state);
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t done = write(fd, buf, len);

		if (done < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += done;
		len -= (size_t)done;
	}
	return 0;
}

int kfs_state_dir_save(struct kfs_state_dir *state, const struct kfs_record *record)
{
	char name[64], temp[80], *text;
	int len, fd, r;

	text = malloc(KFS_RECORD_MAX);
	if (!text)
		return -ENOMEM;
	len = kfs_record_render(record, text, KFS_RECORD_MAX);
	if (len < 0) {
		free(text);
		return len;
	}
	record_file_name(record->id, name, sizeof(name));
	snprintf(temp, sizeof(temp), TEMP_PREFIX "%s", name);
	fd = openat(state->dir_fd, temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		goto out_free;
	}
	r = write_all(fd, text, (size_t)len);
	if (r == 0 && fdatasync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && renameat(state->dir_fd, temp, state->dir_fd, name) < 0)
		r = -errno;
	/* The rename is durable once the directory is. */
	if (r == 0 && fsync(state->dir_fd) < 0)
		r = -errno;
	if (r < 0)
		unlinkat(state->dir_fd, temp, 0);
out_free:
	free(text);
	return r;
}

int kfs_state_dir_delete(struct kfs_state_dir *state, uint64_t id)
{
	char name[64];

	record_file_name(id, name, sizeof(name));
	if (unlinkat(state->dir_fd, name, 0) < 0)
		return errno == ENOENT ? 0 : -errno;
	return fsync(state->dir_fd) < 0 ? -errno : 0;
}

static int compare_ids(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Read the record file of @id and hand it to @fn, parsed or with the reason it is not. */
static void load_one(struct kfs_state_dir *state, uint64_t id, char *text, kfs_record_fn fn, void *context)
{
	struct kfs_record *record = malloc(sizeof(*record));
	char name[64], why[256];
	ssize_t got = 0;
	size_t len = 0;
	int fd;

	record_file_name(id, name, sizeof(name));
	fd = openat(state->dir_fd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || !record) {
		snprintf(why, sizeof(why), "cannot read it: %s", strerror(fd < 0 ? errno : ENOMEM));
		goto damaged;
	}
	/* One byte more than a record can be, to tell an overlong file. */
	while (len <= KFS_RECORD_MAX && (got = read(fd, text + len, KFS_RECORD_MAX + 1 - len)) > 0)
		len += (size_t)got;
	if (got < 0) {
		snprintf(why, sizeof(why), "cannot read it: %s", strerror(errno));
		goto damaged;
	}
	if (len > KFS_RECORD_MAX) {
		snprintf(why, sizeof(why), "longer than any record");
		goto damaged;
	}
	if (kfs_record_parse(text, len, record, why, sizeof(why)) < 0)
		goto damaged;
	if (record->id != id) {
		snprintf(why, sizeof(why), "holds job %" PRIu64 ", not the job its name says", record->id);
		goto damaged;
	}
	close(fd);
	fn(id, record, NULL, context);
	free(record);
	return;

damaged:
	if (fd >= 0)
		close(fd);
	free(record);
	fn(id, NULL, why, context);
}

int kfs_state_dir_load(struct kfs_state_dir *state, kfs_record_fn fn, void *context)
{
	uint64_t *ids = NULL, id;
	size_t count = 0, room = 0, index;
	struct dirent *entry;
	char *text;
	DIR *listing;
	int fd;

	fd = dup(state->dir_fd);
	if (fd < 0)
		return -errno;
	listing = fdopendir(fd);
	if (!listing) {
		close(fd);
		return -errno;
	}
	rewinddir(listing);
	while ((entry = readdir(listing))) {
		id = record_id_of(entry->d_name);
		if (id == 0)
			continue;
		if (count == room) {
			uint64_t *grown = realloc(ids, (room = room ? room * 2 : 64) * sizeof(*ids));

			if (!grown) {
				free(ids);
				closedir(listing);
				return -ENOMEM;
			}
			ids = grown;
		}
		ids[count++] = id;
	}
	closedir(listing);
	text = malloc(KFS_RECORD_MAX + 1);
	if (!text) {
		free(ids);
		return -ENOMEM;
	}
	if (count > 0)	/* qsort(NULL, 0, ...) is undefined behaviour */
		qsort(ids, count, sizeof(*ids), compare_ids);
	for (index = 0; index < count; index++)
		load_one(state, ids[index], text, fn, context);
	free(text);
	free(ids);
	return (int)count;
}
