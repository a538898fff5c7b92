/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Job records for --state-dir: rendering, parsing and the directory of
 * record files.  See state.h for the format and the guarantees, and for
 * what the directory must be.
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
#include <limits.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kcopydfs/log.h"
#include "kcopydfs/state.h"

#define HEADER "kcopydfs-state 2\n"
#define HEADER_V1 "kcopydfs-state 1\n"	/* without groups, caps and view */
/* The lines that follow start at the same place after either header. */
_Static_assert(sizeof(HEADER) == sizeof(HEADER_V1), "the two headers have one length");
#define SUM_KEY "sum: "
#define SUM_DIGITS 16
#define RECORD_SUFFIX ".job"
#define TEMP_PREFIX ".tmp-"
#define LOCK_NAME "lock"
/* Attempts at a fresh temporary name before a save gives up with EEXIST. */
#define TEMP_ATTEMPTS 16

/*
 * An open state directory.  Every file in it is reached through ->dir_fd
 * with openat(2) and friends, never by a path string that would be
 * resolved again; nothing is opened through a symbolic link (O_NOFOLLOW),
 * and a temporary record is always a new file (O_EXCL).  Set up by
 * kfs_state_dir_open() and read-only after: no lock needed.
 */
struct kfs_state_dir {
	int dir_fd;
	int lock_fd;
	uid_t owner;			/* the daemon's effective uid: owns the directory and every file in it */
	char *path;			/* for messages only, never opened again */
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

/* The decimal number that [*@pos, up to @stop or @end) holds; *@pos moves past it and @stop. */
static bool parse_u64_until(const char **pos, const char *end, char stop, uint64_t *value)
{
	const char *found = stop ? memchr(*pos, stop, (size_t)(end - *pos)) : end;

	if (!found || !parse_u64(*pos, (size_t)(found - *pos), value))
		return false;
	*pos = found + (stop ? 1 : 0);
	return true;
}

/* "daemon", "mnt:INO root:DEV:INO", or "unknown" (then the owner's identity is not known). */
static bool parse_view(const char *value, size_t len, struct kfs_record *record)
{
	struct kfs_view *view = &record->view;
	const char *pos = value, *end = value + len;

	memset(view, 0, sizeof(*view));
	if (len == 7 && memcmp(value, "unknown", 7) == 0) {
		record->identity_known = false;
		return true;
	}
	if (len == 6 && memcmp(value, "daemon", 6) == 0) {
		view->daemon = true;
		return true;
	}
	if (len < 4 || memcmp(pos, "mnt:", 4) != 0)
		return false;
	pos += 4;
	if (!parse_u64_until(&pos, end, ' ', &view->mnt_ns) || (size_t)(end - pos) < 5 || memcmp(pos, "root:", 5) != 0)
		return false;
	pos += 5;
	return parse_u64_until(&pos, end, ':', &view->root_dev) && parse_u64_until(&pos, end, 0, &view->root_ino);
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

/*
 * Is @st, the directory @path on the way to the state directory, safe to
 * trust?  The state directory itself (@is_state_dir) must belong to the
 * daemon's user and be writable by nobody else.  Each of its parents must
 * belong to root or to the daemon's user, and be writable by nobody else
 * unless it is sticky (as /tmp is): in a sticky directory nobody but its
 * owner and root can rename or remove an entry that is not theirs, so the
 * directories under it cannot be replaced.  sshd's StrictModes asks the
 * same of a user's files.  Return: 0, or -errno with the reason in @why.
 */
static int check_directory(const struct stat *st, const char *path, bool is_state_dir, uid_t owner, char *why,
			   size_t why_len)
{
	unsigned int mode = st->st_mode & 07777;

	if (!S_ISDIR(st->st_mode)) {
		snprintf(why, why_len, "%s is not a directory", path);
		return -ENOTDIR;
	}
	if (is_state_dir && st->st_uid != owner) {
		snprintf(why, why_len,
			 "%s is owned by uid %u, not by the daemon's user (uid %u): refusing it, since its owner could "
			 "plant files in it (chown it to uid %u, or name a directory that does not exist yet)",
			 path, (unsigned int)st->st_uid, (unsigned int)owner, (unsigned int)owner);
		return -EPERM;
	}
	if (is_state_dir && (mode & (S_IWGRP | S_IWOTH))) {
		snprintf(why, why_len,
			 "%s has mode %04o: writable by its group or others, who could plant files in it "
			 "(chmod go-w it; 0700 is what kcopydfs makes)",
			 path, mode);
		return -EPERM;
	}
	if (!is_state_dir && st->st_uid != 0 && st->st_uid != owner) {
		snprintf(why, why_len,
			 "%s, a parent of the state directory, is owned by uid %u: only root or the daemon's user "
			 "(uid %u) may own it, since its owner could replace what is under it",
			 path, (unsigned int)st->st_uid, (unsigned int)owner);
		return -EPERM;
	}
	if (!is_state_dir && (mode & (S_IWGRP | S_IWOTH)) && !(mode & S_ISVTX)) {
		snprintf(why, why_len,
			 "%s, a parent of the state directory, has mode %04o: writable by its group or others and not "
			 "sticky, so they could replace what is under it (chmod go-w it)",
			 path, mode);
		return -EPERM;
	}
	return 0;
}

/*
 * Open the directory @dir as state directory, checking it and each parent
 * from / down with check_directory().  The parent is resolved once with
 * realpath(3) (an administrator's symbolic link there is followed), then
 * walked a component at a time with O_NOFOLLOW, so what was checked is
 * what is opened.  The last component is made with mode 0700 if missing
 * and must not be a symbolic link.  Return: its fd, or -errno with @why.
 */
static int open_checked_directory(const char *dir, uid_t owner, char *why, size_t why_len)
{
	char *copy, *slash, *base, *parent, *real_parent = NULL, *component, *save = NULL;
	char walked[PATH_MAX] = "";
	struct stat st;
	int fd, next, r;

	copy = strdup(dir);
	if (!copy)
		return -ENOMEM;
	/* "DIR/" is DIR. */
	for (slash = copy + strlen(copy); slash > copy + 1 && slash[-1] == '/'; slash--)
		slash[-1] = '\0';
	slash = strrchr(copy, '/');
	if (!slash) {
		parent = ".";
		base = copy;
	} else {
		*slash = '\0';
		parent = slash == copy ? "/" : copy;
		base = slash + 1;
	}
	if (base[0] == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0) {
		snprintf(why, why_len, "%s: name the state directory itself, not / or a path ending in . or ..", dir);
		r = -EINVAL;
		goto out_free;
	}
	real_parent = realpath(parent, NULL);
	if (!real_parent) {
		r = -errno;
		snprintf(why, why_len, "%s: cannot resolve its parent %s: %s", dir, parent, strerror(-r));
		goto out_free;
	}

	fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		r = -errno;
		snprintf(why, why_len, "/: %s", strerror(-r));
		goto out_close;
	}
	r = check_directory(&st, "/", false, owner, why, why_len);
	for (component = strtok_r(real_parent, "/", &save); r == 0 && component;
	     component = strtok_r(NULL, "/", &save)) {
		snprintf(walked + strlen(walked), sizeof(walked) - strlen(walked), "/%s", component);
		next = openat(fd, component, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (next < 0) {
			/* It was there for realpath(): it changed since (ELOOP: now a symbolic link). */
			r = -errno;
			snprintf(why, why_len, "%s: %s", walked, strerror(-r));
			break;
		}
		close(fd);
		fd = next;
		if (fstat(fd, &st) < 0) {
			r = -errno;
			snprintf(why, why_len, "%s: %s", walked, strerror(-r));
			break;
		}
		r = check_directory(&st, walked, false, owner, why, why_len);
	}
	if (r < 0)
		goto out_close;
	snprintf(walked + strlen(walked), sizeof(walked) - strlen(walked), "/%s", base);
	if (mkdirat(fd, base, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		snprintf(why, why_len, "cannot make %s: %s", walked, strerror(-r));
		goto out_close;
	}
	next = openat(fd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (next < 0) {
		r = -errno;
		if (fstatat(fd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
			r = -ELOOP;
			snprintf(why, why_len, "%s is a symbolic link: name the directory it leads to", walked);
		} else {
			snprintf(why, why_len, "%s: %s", walked, strerror(-r));
		}
		goto out_close;
	}
	if (fstat(next, &st) < 0) {
		r = -errno;
		snprintf(why, why_len, "%s: %s", walked, strerror(-r));
		close(next);
		goto out_close;
	}
	r = check_directory(&st, walked, true, owner, why, why_len);
	if (r < 0)
		close(next);
	else
		r = next;
out_close:
	if (fd >= 0)
		close(fd);
out_free:
	free(real_parent);
	free(copy);
	return r;
}

/*
 * Open (or make) DIR/lock, a regular file of the daemon's user.  Anything
 * else by that name (a symbolic link, a FIFO, a file of another user, a
 * hard link to some other file) is removed first, never opened: opening a
 * link would create or open its target, wherever that is.
 */
static int open_lock(struct kfs_state_dir *state, char *why, size_t why_len)
{
	struct stat st;
	int fd, r;

	if (fstatat(state->dir_fd, LOCK_NAME, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    (!S_ISREG(st.st_mode) || st.st_uid != state->owner || st.st_nlink != 1)) {
		kfs_log(LOG_WARNING, "%s/" LOCK_NAME " is not a regular file of the daemon's own (mode %06o, uid %u, "
			"%u links): removing it, not following it", state->path, (unsigned int)st.st_mode,
			(unsigned int)st.st_uid, (unsigned int)st.st_nlink);
		if (unlinkat(state->dir_fd, LOCK_NAME, S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) < 0) {
			r = -errno;
			snprintf(why, why_len, "%s/" LOCK_NAME ": cannot remove what is there: %s", state->path,
				 strerror(-r));
			return r;
		}
	}
	fd = openat(state->dir_fd, LOCK_NAME, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		snprintf(why, why_len, "%s/" LOCK_NAME ": %s", state->path, strerror(-r));
		return r;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != state->owner) {
		close(fd);
		snprintf(why, why_len, "%s/" LOCK_NAME ": not a regular file of the daemon's user", state->path);
		return -EPERM;
	}
	return fd;
}

int kfs_state_dir_open(const char *dir, char *why, size_t why_len, struct kfs_state_dir **result)
{
	struct kfs_state_dir *state;
	struct dirent *entry;
	DIR *listing;
	size_t len;
	int r, fd;

	if (why_len)
		why[0] = '\0';
	state = calloc(1, sizeof(*state));
	if (!state)
		return -ENOMEM;
	state->owner = geteuid();
	state->path = strdup(dir);
	if (!state->path) {
		r = -ENOMEM;
		goto err_free;
	}
	/* For messages: "DIR/lock", not "DIR//lock". */
	for (len = strlen(state->path); len > 1 && state->path[len - 1] == '/'; len--)
		state->path[len - 1] = '\0';
	state->dir_fd = open_checked_directory(dir, state->owner, why, why_len);
	if (state->dir_fd < 0) {
		r = state->dir_fd;
		goto err_free;
	}
	state->lock_fd = open_lock(state, why, why_len);
	if (state->lock_fd < 0) {
		r = state->lock_fd;
		goto err_close_dir;
	}
	if (flock(state->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		r = errno == EWOULDBLOCK ? -EBUSY : -errno;
		snprintf(why, why_len, "%s: %s%s", dir, strerror(-r),
			 r == -EBUSY ? " (another kcopydfs uses it)" : "");
		goto err_close_lock;
	}
	/*
	 * A crash between writing a temporary record and renaming it leaves the
	 * temporary.  unlinkat() removes a name, and never follows it.
	 */
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
	free(state->path);
	free(state);
	return r;
}

void kfs_state_dir_close(struct kfs_state_dir *state)
{
	if (!state)
		return;
	close(state->lock_fd);	/* drops the flock */
	close(state->dir_fd);
	free(state->path);
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

/*
 * A new temporary file for the record file @name: TEMP_PREFIX, the name and
 * a random suffix, created with O_EXCL (so never through a symbolic link or
 * over anything that is there), a fresh name on EEXIST.  Its name goes to
 * @temp.  Return: the fd, or -errno.
 */
static int create_temp(struct kfs_state_dir *state, const char *name, char *temp, size_t temp_len)
{
	unsigned int attempt;
	uint64_t suffix;
	int fd = -EEXIST;

	for (attempt = 0; attempt < TEMP_ATTEMPTS && fd == -EEXIST; attempt++) {
		if (getrandom(&suffix, sizeof(suffix), GRND_NONBLOCK) != (ssize_t)sizeof(suffix)) {
			/* No entropy yet (early boot): the clock will do, O_EXCL keeps it safe. */
			struct timespec now;

			clock_gettime(CLOCK_MONOTONIC, &now);
			suffix = ((uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec) ^ attempt;
		}
		snprintf(temp, temp_len, TEMP_PREFIX "%s.%016" PRIx64, name, suffix);
		fd = openat(state->dir_fd, temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0)
			fd = -errno;
	}
	return fd;
}

int kfs_state_dir_save(struct kfs_state_dir *state, const struct kfs_record *record)
{
	char name[64], temp[104], *text;
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
	fd = create_temp(state, name, temp, sizeof(temp));
	if (fd < 0) {
		r = fd;
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

/*
 * Is DIR/@name a regular file of the daemon's user?  Anything else (a
 * symbolic link, a FIFO, a device, a directory, another user's file) is no
 * record of ours: it is logged and skipped, never opened.
 */
static bool is_own_file(struct kfs_state_dir *state, const char *name, const struct stat *st)
{
	const char *what = S_ISLNK(st->st_mode) ? "a symbolic link" : S_ISDIR(st->st_mode) ? "a directory"
							    : !S_ISREG(st->st_mode) ? "not a regular file" : NULL;

	if (!what && st->st_uid == state->owner)
		return true;
	if (what)
		kfs_log(LOG_WARNING, "%s/%s is %s: skipped, not read as a record", state->path, name, what);
	else
		kfs_log(LOG_WARNING, "%s/%s is owned by uid %u, not by the daemon's user (uid %u): skipped, not read "
			"as a record", state->path, name, (unsigned int)st->st_uid, (unsigned int)state->owner);
	return false;
}

/*
 * Read the record file of @id and hand it to @fn, parsed or with the reason
 * it is not.  Return: false if it was skipped (see is_own_file()).
 */
static bool load_one(struct kfs_state_dir *state, uint64_t id, char *text, kfs_record_fn fn, void *context)
{
	struct kfs_record *record;
	char name[64], why[256];
	struct stat before, st;
	ssize_t got = 0;
	size_t len = 0;
	int fd;

	record_file_name(id, name, sizeof(name));
	if (fstatat(state->dir_fd, name, &before, AT_SYMLINK_NOFOLLOW) == 0 && !is_own_file(state, name, &before))
		return false;
	record = malloc(sizeof(*record));
	/* O_NONBLOCK: what is not a regular file cannot hold the open (the check above ran before it). */
	fd = openat(state->dir_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd >= 0 && fstat(fd, &st) == 0 && !is_own_file(state, name, &st)) {
		close(fd);
		free(record);
		return false;
	}
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
	return true;

damaged:
	if (fd >= 0)
		close(fd);
	free(record);
	fn(id, NULL, why, context);
	return true;
}

int kfs_state_dir_load(struct kfs_state_dir *state, kfs_record_fn fn, void *context)
{
	uint64_t *ids = NULL, id;
	size_t count = 0, room = 0, index, loaded = 0;
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
		if (load_one(state, ids[index], text, fn, context))
			loaded++;
	free(text);
	free(ids);
	return (int)loaded;
}
