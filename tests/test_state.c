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
	r = kfs_state_dir_open(path, &state);
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
	cr_assert_eq(kfs_state_dir_open(path, &state), 0);
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
	cr_assert_eq(kfs_state_dir_open(path, &state), 0);
	cr_assert_eq(kfs_state_dir_open(path, &second), -EBUSY, "a second open of the same directory");
	/* What a crash between write and rename leaves. */
	state_path(temp, sizeof(temp), ".tmp-5.job");
	fd = open(temp, O_WRONLY | O_CREAT, 0600);
	cr_assert(fd >= 0);
	close(fd);
	kfs_state_dir_close(state);
	cr_assert_eq(kfs_state_dir_open(path, &state), 0, "open after the first closed");
	cr_assert(access(temp, F_OK) < 0, "the temporary record of a crash is still there");
	kfs_state_dir_close(state);
}
