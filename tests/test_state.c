/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Job records for --state-dir (src/kcopydfs/state.c): the record text, its
 * checksum, every way a file can be damaged, and the directory of records
 * (atomic saves, loading in id order, the lock, leftovers of a crash).
 * Plain files in a temporary directory: no root, no mount.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kcopydfs/state.h"

static char dir[64];
static char *text;

static void setup(void)
{
	strcpy(dir, "/tmp/kcopyd-state-test.XXXXXX");
	cr_assert(mkdtemp(dir) != NULL, "mkdtemp: %s", strerror(errno));
	text = malloc(KFS_RECORD_MAX);
	cr_assert(text);
}

static void teardown(void)
{
	char command[128];

	snprintf(command, sizeof(command), "rm -rf '%s'", dir);
	cr_expect(system(command) == 0, "removing %s", dir);
	free(text);
}

TestSuite(state, .init = setup, .fini = teardown, .timeout = 30);

static struct kfs_record sample(uint64_t id, const char *name)
{
	struct kfs_record record = { .id = id, .uid = 1000, .gid = 100, .sectors_total = 2048, .checkpoint = 1024,
				     .identity_known = true, .caps = 0, .group_count = 2, .groups = { 100, 27 },
				     .view = { .mnt_ns = 4026532001u, .root_dev = 2049, .root_ino = 2 } };

	snprintf(record.name, sizeof(record.name), "%s", name);
	strcpy(record.state, "running");
	strcpy(record.error, "none");
	snprintf(record.description, sizeof(record.description),
		 "copy from=/dev/loop0:0+2048 to=\"/srv/my disk.img\":8+2048 flags=ignore_error");
	return record;
}

static void expect_same(const struct kfs_record *a, const struct kfs_record *b, const char *what)
{
	cr_assert(a->id == b->id && strcmp(a->name, b->name) == 0 && a->uid == b->uid && a->gid == b->gid &&
			  strcmp(a->state, b->state) == 0 && a->sectors_total == b->sectors_total &&
			  a->checkpoint == b->checkpoint && strcmp(a->error, b->error) == 0 &&
			  strcmp(a->description, b->description) == 0 && a->identity_known == b->identity_known &&
			  a->caps == b->caps && a->view.daemon == b->view.daemon && a->view.mnt_ns == b->view.mnt_ns &&
			  a->view.root_dev == b->view.root_dev && a->view.root_ino == b->view.root_ino &&
			  a->group_count == b->group_count &&
			  memcmp(a->groups, b->groups, a->group_count * sizeof(gid_t)) == 0,
		  "%s: record %" PRIu64 " '%s' came back as %" PRIu64 " '%s' (state %s/%s, checkpoint %" PRIu64
		  "/%" PRIu64 ")",
		  what, a->id, a->name, b->id, b->name, a->state, b->state, a->checkpoint, b->checkpoint);
}

/* Re-sign @body (a record without its sum line) so that only its content can be wrong. */
static size_t signed_text(const char *body, char *out, size_t len)
{
	uint64_t hash = 0xcbf29ce484222325ull;
	size_t index, body_len = strlen(body);

	for (index = 0; index < body_len; index++)
		hash = (hash ^ (unsigned char)body[index]) * 0x100000001b3ull;
	return (size_t)snprintf(out, len, "%ssum: %016" PRIx64 "\n", body, hash);
}

/* ---- the record text ---------------------------------------------------- */

Test(state, render_then_parse_gives_the_same_record)
{
	struct kfs_record record = sample(42, "backup"), back;
	char why[256] = "";
	int len = kfs_record_render(&record, text, KFS_RECORD_MAX);

	cr_assert(len > 0, "render: %d", len);
	cr_assert(strncmp(text, "kcopydfs-state 2\nid: 42\nname: backup\nowner: 1000:100\ngroups: 100 27\n"
			  "caps: 0000000000000000\nview: mnt:4026532001 root:2049:2\n", 124) == 0,
		  "the text starts: %.140s", text);
	cr_assert_eq(kfs_record_parse(text, (size_t)len, &back, why, sizeof(why)), 0, "parse: %s", why);
	expect_same(&record, &back, "round trip");

	/* The daemon's view, no groups, a root owner's capabilities. */
	record.view = (struct kfs_view){ .daemon = true };
	record.group_count = 0;
	record.caps = 0x1ffffffffffull;
	len = kfs_record_render(&record, text, KFS_RECORD_MAX);
	cr_assert(len > 0, "render: %d", len);
	cr_assert(strstr(text, "\ngroups: -\ncaps: 000001ffffffffff\nview: daemon\n") != NULL, "the text: %s", text);
	cr_assert_eq(kfs_record_parse(text, (size_t)len, &back, why, sizeof(why)), 0, "parse: %s", why);
	expect_same(&record, &back, "round trip in the daemon's view");

	/* A job restored from a version 1 record: its owner's identity is unknown, and stays so. */
	record.identity_known = false;
	record.view = (struct kfs_view){ 0 };
	record.caps = 0;
	len = kfs_record_render(&record, text, KFS_RECORD_MAX);
	cr_assert(strstr(text, "\nview: unknown\n") != NULL, "the text: %s", text);
	cr_assert_eq(kfs_record_parse(text, (size_t)len, &back, why, sizeof(why)), 0, "parse: %s", why);
	expect_same(&record, &back, "round trip of an unknown identity");
}

/* Issue 17: a paused job is recorded as "paused", its hashes, verify and rate in its description. */
Test(state, a_paused_job_with_hashes_verify_and_a_rate_round_trips)
{
	struct kfs_record record = sample(7, "nightly"), back;
	char why[256] = "";
	struct jobspec spec;
	int len;

	strcpy(record.state, "paused");
	snprintf(record.description, sizeof(record.description),
		 "copy from=/dev/loop0:0+2048 to=/dev/loop1:0+2048 flags=verify hash=sha256,xxh128 rate=16777216");
	len = kfs_record_render(&record, text, KFS_RECORD_MAX);
	cr_assert(len > 0, "render: %d", len);
	cr_assert(strstr(text, "\nstate: paused\n") != NULL, "the text: %s", text);
	cr_assert_eq(kfs_record_parse(text, (size_t)len, &back, why, sizeof(why)), 0, "parse: %s", why);
	expect_same(&record, &back, "round trip of a paused job");
	/* The description it is resumed from gives back the options. */
	cr_assert_eq(jobspec_parse(back.description, strlen(back.description), &spec, why, sizeof(why)), 0, "%s", why);
	cr_assert(spec.flags == KCOPYD_VERIFY && spec.hashes == (KCOPYD_HASH_SHA256 | KCOPYD_HASH_XXH128) &&
			  spec.rate == 16777216,
		  "flags %#x, hashes %#x, rate %llu", spec.flags, spec.hashes, (unsigned long long)spec.rate);
	jobspec_free(&spec);
}

Test(state, a_version_1_record_parses_without_the_owners_identity)
{
	struct kfs_record back;
	char why[256] = "";
	size_t len = signed_text("kcopydfs-state 1\nid: 3\nname: a\nowner: 1000:100\nstate: running\ntotal: 8\n"
				 "checkpoint: 4\nerror: none\ndescription: zero to=/a\n",
				 text, KFS_RECORD_MAX);

	cr_assert_eq(kfs_record_parse(text, len, &back, why, sizeof(why)), 0, "parse: %s", why);
	cr_assert(!back.identity_known && back.uid == 1000 && back.checkpoint == 4,
		  "identity_known %d uid %u checkpoint %" PRIu64, back.identity_known, (unsigned int)back.uid,
		  back.checkpoint);
}

Test(state, render_refuses_what_would_not_read_back)
{
	struct kfs_record record = sample(1, "x");
	char tiny[16];

	strcpy(record.error, "two\nlines");
	cr_assert_eq(kfs_record_render(&record, text, KFS_RECORD_MAX), -EINVAL, "an error line with a newline");
	record = sample(1, ".hidden");
	cr_assert_eq(kfs_record_render(&record, text, KFS_RECORD_MAX), -EINVAL, "a bad name");
	record = sample(1, "x");
	cr_assert_eq(kfs_record_render(&record, tiny, sizeof(tiny)), -ENOSPC, "a small buffer");
	cr_assert_eq(tiny[0], '\0', "a small buffer is left empty");
}

Test(state, every_truncation_is_refused_with_a_reason)
{
	struct kfs_record record = sample(7, "cut"), back;
	int len = kfs_record_render(&record, text, KFS_RECORD_MAX), cut;
	char why[256];

	cr_assert(len > 0);
	for (cut = 0; cut < len; cut++) {
		why[0] = '\0';
		cr_assert_eq(kfs_record_parse(text, (size_t)cut, &back, why, sizeof(why)), -EINVAL,
			     "the record cut to %d of %d bytes was accepted", cut, len);
		cr_assert(why[0] != '\0' && strchr(why, '\n') == NULL, "cut to %d bytes: reason '%s'", cut, why);
	}
}

Test(state, every_changed_byte_is_refused)
{
	struct kfs_record record = sample(8, "flip"), back;
	int len = kfs_record_render(&record, text, KFS_RECORD_MAX), pos;
	char why[256];

	cr_assert(len > 0);
	for (pos = 0; pos < len; pos++) {
		char saved = text[pos];

		text[pos] = (char)(saved ^ 0x01);
		cr_assert_eq(kfs_record_parse(text, (size_t)len, &back, why, sizeof(why)), -EINVAL,
			     "byte %d changed from 0x%02x was accepted", pos, (unsigned char)saved);
		text[pos] = saved;
	}
}

Test(state, well_signed_but_wrong_content_is_refused_with_its_reason)
{
	static const struct {
		const char *body;
		const char *reason;
	} cases[] = {
		{ "kcopydfs-state 3\nid: 1\n", "bad first line" },
		{ "kcopydfs-state 2\nid: 3\nname: a\nowner: 0:0\nstate: done\ntotal: 8\ncheckpoint: 8\nerror: none\n"
		  "description: zero to=/a\n", "expected 'groups" },
		{ "kcopydfs-state 2\nid: 3\nname: a\nowner: 0:0\ngroups: 1 x\ncaps: 0000000000000000\nview: daemon\n"
		  "state: done\ntotal: 8\ncheckpoint: 8\nerror: none\ndescription: zero to=/a\n", "groups:" },
		{ "kcopydfs-state 2\nid: 3\nname: a\nowner: 0:0\ngroups: -\ncaps: -000000000000001\nview: daemon\n"
		  "state: done\ntotal: 8\ncheckpoint: 8\nerror: none\ndescription: zero to=/a\n", "caps:" },
		{ "kcopydfs-state 2\nid: 3\nname: a\nowner: 0:0\ngroups: -\ncaps: 0000000000000000\nview: mnt:1\n"
		  "state: done\ntotal: 8\ncheckpoint: 8\nerror: none\ndescription: zero to=/a\n", "view:" },
		{ "kcopydfs-state 2\nid: 3\nname: a\nowner: 0:0\ngroups: -\ncaps: 0000000000000000\n"
		  "view: mnt:+1 root: 2:3\nstate: done\ntotal: 8\ncheckpoint: 8\nerror: none\ndescription: zero to=/a\n",
		  "view:" },
		{ "kcopydfs-state 2\nid: 3\nname: a\nowner: 0:0\ngroups: -\ncaps: 0000000000000000\n"
		  "view: mnt:1 root:2:99999999999999999999999\nstate: done\ntotal: 8\ncheckpoint: 8\nerror: none\n"
		  "description: zero to=/a\n", "view:" },
		{ "kcopydfs-state 1\nid: 0\nname: a\nowner: 0:0\nstate: done\ntotal: 8\ncheckpoint: 8\nerror: none\n"
		  "description: zero to=/a\n", "id:" },
		{ "kcopydfs-state 1\nid: 3\nname: a b\nowner: 0:0\nstate: done\ntotal: 8\ncheckpoint: 8\n"
		  "error: none\ndescription: zero to=/a\n", "name:" },
		{ "kcopydfs-state 1\nid: 3\nname: a\nowner: 0\nstate: done\ntotal: 8\ncheckpoint: 8\nerror: none\n"
		  "description: zero to=/a\n", "owner:" },
		{ "kcopydfs-state 1\nid: 3\nname: a\nowner: 0:0\nstate: done\ntotal: 8\ncheckpoint: 9\nerror: none\n"
		  "description: zero to=/a\n", "checkpoint:" },
		{ "kcopydfs-state 1\nid: 3\nname: a\nowner: 0:0\nstate: done\ntotal: 99999999999999999999999\n"
		  "checkpoint: 0\nerror: none\ndescription: zero to=/a\n", "total:" },
		{ "kcopydfs-state 1\nid: 3\nname: a\nstate: done\nowner: 0:0\ntotal: 8\ncheckpoint: 8\nerror: none\n"
		  "description: zero to=/a\n", "expected 'owner" },
		{ "kcopydfs-state 1\nid: 3\nname: a\nowner: 0:0\nstate: done\ntotal: 8\ncheckpoint: 8\nerror: none\n"
		  "description: zero to=/a\nextra: 1\n", "unknown line" },
	};
	struct kfs_record back;
	unsigned int index;
	char why[256];

	for (index = 0; index < sizeof(cases) / sizeof(cases[0]); index++) {
		size_t len = signed_text(cases[index].body, text, KFS_RECORD_MAX);

		why[0] = '\0';
		cr_assert_eq(kfs_record_parse(text, len, &back, why, sizeof(why)), -EINVAL, "case %u was accepted",
			     index);
		cr_assert(strstr(why, cases[index].reason) != NULL, "case %u: reason '%s', expected it to say '%s'",
			  index, why, cases[index].reason);
	}
}

/* ---- the directory ----------------------------------------------------- */

struct seen {
	unsigned int count;
	uint64_t ids[8];
	bool damaged[8];
	char why[8][256];
	struct kfs_record records[8];
};

static void collect(uint64_t id, const struct kfs_record *record, const char *why, void *context)
{
	struct seen *seen = context;

	cr_assert(seen->count < 8, "more records than expected");
	seen->ids[seen->count] = id;
	seen->damaged[seen->count] = record == NULL;
	if (record)
		seen->records[seen->count] = *record;
	else
		snprintf(seen->why[seen->count], sizeof(seen->why[0]), "%s", why);
	seen->count++;
}

static void state_path(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/state/%s", dir, name);
}

Test(state, save_load_and_delete_in_id_order)
{
	struct kfs_record records[3] = { sample(12, "c"), sample(3, "a"), sample(7, "b") };
	static struct seen seen;
	struct kfs_state_dir *state;
	char path[128];
	unsigned int index;
	int r;

	state_path(path, sizeof(path), "");
	r = kfs_state_dir_open(path, NULL, 0, &state);
	cr_assert_eq(r, 0, "kfs_state_dir_open: %d (%s)", r, strerror(-r));
	for (index = 0; index < 3; index++)
		cr_assert_eq(kfs_state_dir_save(state, &records[index]), 0, "save %u", index);
	records[1].checkpoint = 2048;
	strcpy(records[1].state, "done");
	cr_assert_eq(kfs_state_dir_save(state, &records[1]), 0, "saving job 3 again");
	r = kfs_state_dir_load(state, collect, &seen);
	cr_assert_eq(r, 3, "load saw %d files", r);
	cr_assert(seen.ids[0] == 3 && seen.ids[1] == 7 && seen.ids[2] == 12, "load order %" PRIu64 " %" PRIu64
		  " %" PRIu64, seen.ids[0], seen.ids[1], seen.ids[2]);
	expect_same(&records[1], &seen.records[0], "job 3, saved twice");
	expect_same(&records[2], &seen.records[1], "job 7");
	expect_same(&records[0], &seen.records[2], "job 12");
	cr_assert_eq(kfs_state_dir_delete(state, 7), 0, "delete 7");
	cr_assert_eq(kfs_state_dir_delete(state, 7), 0, "delete 7 again");
	memset(&seen, 0, sizeof(seen));
	cr_assert_eq(kfs_state_dir_load(state, collect, &seen), 2, "after the delete");
	kfs_state_dir_close(state);
	state_path(path, sizeof(path), "7.job");
	cr_assert(access(path, F_OK) < 0, "7.job is still there");
}

Test(state, a_damaged_file_is_reported_and_the_others_load)
{
	struct kfs_record good = sample(1, "good"), other = sample(2, "other"), moved = sample(3, "moved");
	static struct seen seen;
	struct kfs_state_dir *state;
	char path[128], from[128];
	struct stat st;

	state_path(path, sizeof(path), "");
	cr_assert_eq(kfs_state_dir_open(path, NULL, 0, &state), 0);
	cr_assert_eq(kfs_state_dir_save(state, &good), 0);
	cr_assert_eq(kfs_state_dir_save(state, &other), 0);
	cr_assert_eq(kfs_state_dir_save(state, &moved), 0);
	/* Cut job 2 in half; name job 3's file as job 4's. */
	state_path(path, sizeof(path), "2.job");
	cr_assert(stat(path, &st) == 0 && truncate(path, st.st_size / 2) == 0);
	state_path(from, sizeof(from), "3.job");
	state_path(path, sizeof(path), "4.job");
	cr_assert(rename(from, path) == 0);
	cr_assert_eq(kfs_state_dir_load(state, collect, &seen), 3);
	cr_assert(!seen.damaged[0] && seen.ids[0] == 1, "job 1 is fine");
	cr_assert(seen.damaged[1] && seen.ids[1] == 2 && strstr(seen.why[1], "cut short"),
		  "job 2: damaged %d, reason '%s'", seen.damaged[1], seen.why[1]);
	cr_assert(seen.damaged[2] && seen.ids[2] == 4 && strstr(seen.why[2], "holds job 3"),
		  "4.job: damaged %d, reason '%s'", seen.damaged[2], seen.why[2]);
	kfs_state_dir_close(state);
}

Test(state, one_daemon_per_directory_and_crash_leftovers_go)
{
	struct kfs_state_dir *state, *second;
	char path[128], temp[128];
	int fd;

	state_path(path, sizeof(path), "");
	cr_assert_eq(kfs_state_dir_open(path, NULL, 0, &state), 0);
	cr_assert_eq(kfs_state_dir_open(path, NULL, 0, &second), -EBUSY, "a second open of the same directory");
	/* What a crash between write and rename leaves. */
	state_path(temp, sizeof(temp), ".tmp-5.job");
	fd = open(temp, O_WRONLY | O_CREAT, 0600);
	cr_assert(fd >= 0);
	close(fd);
	kfs_state_dir_close(state);
	cr_assert_eq(kfs_state_dir_open(path, NULL, 0, &state), 0, "open after the first closed");
	cr_assert(access(temp, F_OK) < 0, "the temporary record of a crash is still there");
	kfs_state_dir_close(state);
}

/* ---- what the directory trusts, and what it never follows ------------------ */

#define SECRET "a root-only file\n"

/* DIR/secret, mode 0600, holding SECRET: what a planted link points at. */
static void make_secret(char *path, size_t len)
{
	int fd;

	snprintf(path, len, "%s/secret", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	cr_assert(fd >= 0, "creating %s: %s", path, strerror(errno));
	cr_assert(write(fd, SECRET, strlen(SECRET)) == (ssize_t)strlen(SECRET));
	close(fd);
}

/* The secret is byte for byte what it was. */
static void expect_secret_intact(const char *path, const char *what)
{
	char buf[256] = "";
	ssize_t got;
	int fd = open(path, O_RDONLY);

	cr_assert(fd >= 0, "%s: opening %s: %s", what, path, strerror(errno));
	got = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	cr_expect(got == (ssize_t)strlen(SECRET) && memcmp(buf, SECRET, strlen(SECRET)) == 0,
		  "%s: the file a link pointed at now holds %zd bytes: '%.*s'", what, got, (int)(got > 0 ? got : 0), buf);
}

/* DIR/state/NAME is a regular file (not a link). */
static void expect_regular(const char *name, const char *what)
{
	char path[128];
	struct stat st;

	state_path(path, sizeof(path), name);
	cr_assert(lstat(path, &st) == 0, "%s: lstat %s: %s", what, path, strerror(errno));
	cr_expect(S_ISREG(st.st_mode), "%s: %s has mode %o, not a regular file", what, path, (unsigned int)st.st_mode);
}

Test(state, a_link_planted_as_the_lock_is_removed_not_followed)
{
	char secret[128], missing[128], path[128], lock[128], why[512];
	struct kfs_state_dir *state;
	int r;

	make_secret(secret, sizeof(secret));
	snprintf(missing, sizeof(missing), "%s/created-through-the-link", dir);
	state_path(path, sizeof(path), "");
	state_path(lock, sizeof(lock), "lock");
	cr_assert(mkdir(path, 0700) == 0);
	/* A link to an existing file, then one to a file that does not exist. */
	cr_assert(symlink(secret, lock) == 0);
	r = kfs_state_dir_open(path, why, sizeof(why), &state);
	cr_assert_eq(r, 0, "open with a link as the lock: %d (%s)", r, why);
	expect_secret_intact(secret, "lock -> secret");
	expect_regular("lock", "after open with lock -> secret");
	kfs_state_dir_close(state);
	cr_assert(unlink(lock) == 0 && symlink(missing, lock) == 0);
	r = kfs_state_dir_open(path, why, sizeof(why), &state);
	cr_assert_eq(r, 0, "open with a dangling link as the lock: %d (%s)", r, why);
	cr_expect(access(missing, F_OK) < 0, "the lock's link created %s", missing);
	expect_regular("lock", "after open with a dangling lock link");
	kfs_state_dir_close(state);
}

Test(state, links_planted_as_temporary_and_record_names_are_not_followed)
{
	struct kfs_record record = sample(1, "one");
	char secret[128], path[128], link[128], name[16];
	struct kfs_state_dir *state;
	static struct seen seen;
	unsigned int index;
	int r;

	make_secret(secret, sizeof(secret));
	state_path(path, sizeof(path), "");
	cr_assert_eq(kfs_state_dir_open(path, NULL, 0, &state), 0);
	/* The names temporaries had before they were random, and the record's own name. */
	for (index = 1; index <= 3; index++) {
		snprintf(name, sizeof(name), ".tmp-%u.job", index);
		state_path(link, sizeof(link), name);
		cr_assert(symlink(secret, link) == 0, "symlink %s: %s", link, strerror(errno));
	}
	state_path(link, sizeof(link), "1.job");
	cr_assert(symlink(secret, link) == 0);
	r = kfs_state_dir_save(state, &record);
	cr_assert_eq(r, 0, "save with links planted: %d (%s)", r, strerror(-r));
	expect_secret_intact(secret, "save of job 1");
	expect_regular("1.job", "the saved record");
	r = kfs_state_dir_load(state, collect, &seen);
	cr_assert(r == 1 && !seen.damaged[0], "load: %d records, the first damaged %d", r, seen.damaged[0]);
	expect_same(&record, &seen.records[0], "job 1 saved over a link");
	kfs_state_dir_close(state);
}

Test(state, load_skips_what_is_not_a_regular_file_of_the_daemon)
{
	struct kfs_record one = sample(1, "one"), linked = sample(2, "linked"), foreign = sample(5, "foreign");
	char path[128], target[128];
	struct kfs_state_dir *state;
	static struct seen seen;
	int len, fd, r;

	state_path(path, sizeof(path), "");
	cr_assert_eq(kfs_state_dir_open(path, NULL, 0, &state), 0);
	cr_assert_eq(kfs_state_dir_save(state, &one), 0);
	/* 2.job: a link to a well-formed record outside the directory. */
	snprintf(target, sizeof(target), "%s/elsewhere.job", dir);
	len = kfs_record_render(&linked, text, KFS_RECORD_MAX);
	fd = open(target, O_WRONLY | O_CREAT | O_EXCL, 0600);
	cr_assert(len > 0 && fd >= 0 && write(fd, text, (size_t)len) == len);
	close(fd);
	state_path(path, sizeof(path), "2.job");
	cr_assert(symlink(target, path) == 0);
	/* 3.job a FIFO (an open would hang without O_NONBLOCK), 4.job a directory. */
	state_path(path, sizeof(path), "3.job");
	cr_assert(mkfifo(path, 0600) == 0);
	state_path(path, sizeof(path), "4.job");
	cr_assert(mkdir(path, 0700) == 0);
	/* 5.job: a well-formed record that belongs to another user (root can make one). */
	if (geteuid() == 0) {
		state_path(path, sizeof(path), "5.job");
		len = kfs_record_render(&foreign, text, KFS_RECORD_MAX);
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
		cr_assert(len > 0 && fd >= 0 && write(fd, text, (size_t)len) == len);
		cr_assert(fchown(fd, 65534, 65534) == 0);
		close(fd);
	}
	r = kfs_state_dir_load(state, collect, &seen);
	cr_expect(r == 1 && seen.count == 1 && seen.ids[0] == 1 && !seen.damaged[0],
		  "load handed %d records (%u seen, the first id %" PRIu64 "), expected job 1 alone", r, seen.count,
		  seen.ids[0]);
	kfs_state_dir_close(state);
}

/* kfs_state_dir_open() of DIR/state: its return, with the reason in @why. */
static int open_state(char *why, size_t why_len)
{
	struct kfs_state_dir *state;
	char path[128];
	int r;

	state_path(path, sizeof(path), "");
	r = kfs_state_dir_open(path, why, why_len, &state);
	if (r == 0)
		kfs_state_dir_close(state);
	return r;
}

Test(state, a_directory_others_can_write_is_refused)
{
	static const struct {
		mode_t state_mode, parent_mode;
		int expected;
		const char *reason;	/* in the why, or NULL */
	} cases[] = {
		{ 0700, 0700, 0, NULL },
		{ 0750, 0755, 0, NULL },
		{ 0770, 0700, -EPERM, "mode 0770" },
		{ 0702, 0700, -EPERM, "mode 0702" },
		{ 0700, 0777, -EPERM, "a parent of the state directory, has mode 0777" },
		{ 0700, 0775, -EPERM, "a parent of the state directory, has mode 0775" },
		{ 0700, 01777, 0, NULL },	/* sticky, as /tmp: nobody can replace what is in it */
	};
	char path[128], why[512];
	unsigned int index;
	int r;

	state_path(path, sizeof(path), "");
	cr_assert(mkdir(path, 0700) == 0);
	for (index = 0; index < sizeof(cases) / sizeof(cases[0]); index++) {
		cr_assert(chmod(path, cases[index].state_mode) == 0 && chmod(dir, cases[index].parent_mode) == 0);
		why[0] = '\0';
		r = open_state(why, sizeof(why));
		cr_expect(r == cases[index].expected, "state %04o under %04o: got %d (%s), expected %d",
			  (unsigned int)cases[index].state_mode, (unsigned int)cases[index].parent_mode, r, why,
			  cases[index].expected);
		if (cases[index].reason)
			cr_expect(strstr(why, cases[index].reason) != NULL,
				  "state %04o under %04o: the reason '%s' lacks '%s'", (unsigned int)cases[index].state_mode, (unsigned int)cases[index].parent_mode, why,
				  cases[index].reason);
	}
	cr_assert(chmod(dir, 0700) == 0);
}

Test(state, a_directory_of_another_user_or_a_link_is_refused)
{
	char path[128], real[128], why[512];
	int r;

	/* A link as the state directory, even to a good one. */
	snprintf(real, sizeof(real), "%s/real", dir);
	cr_assert(mkdir(real, 0700) == 0);
	state_path(path, sizeof(path), "");
	path[strlen(path) - 1] = '\0';
	cr_assert(symlink(real, path) == 0);
	r = open_state(why, sizeof(why));
	cr_expect(r == -ELOOP && strstr(why, "symbolic link"), "a link as the state directory: %d (%s)", r, why);
	cr_assert(unlink(path) == 0);
	if (geteuid() != 0)
		cr_skip_test("chown to another user needs root");
	cr_assert(mkdir(path, 0700) == 0 && chown(path, 65534, 65534) == 0);
	r = open_state(why, sizeof(why));
	cr_expect(r == -EPERM && strstr(why, "owned by uid 65534"), "a state directory of uid 65534: %d (%s)", r, why);
	/* A parent of another user (not root, not the daemon's). */
	cr_assert(chown(path, 0, 0) == 0 && chown(dir, 65534, 65534) == 0);
	r = open_state(why, sizeof(why));
	cr_expect(r == -EPERM && strstr(why, "a parent of the state directory, is owned by uid 65534"),
		  "a parent of uid 65534: %d (%s)", r, why);
	cr_assert(chown(dir, 0, 0) == 0);
}
