/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Job description tests (src/proto/jobspec.c): the grammar of a job's
 * ctl file, its error reasons, and rendering back to canonical form.  Pure
 * functions, so no mount, no devices and no root.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/jobspec.h"

#define WHY_SIZE 512
#define RENDER_SIZE (2 * JOBSPEC_MAX_LINE)
#define MiB_SECTORS 2048ull
#define GiB_SECTORS (1024ull * MiB_SECTORS)
#define TiB_SECTORS (1024ull * GiB_SECTORS)

static struct jobspec spec;
static char why[WHY_SIZE];
static char shown_input[300];	/* the case under test, printable, for assertion messages */

static void setup(void)
{
	memset(&spec, 0, sizeof(spec));
	memset(why, 0, sizeof(why));
	shown_input[0] = '\0';
}

static void teardown(void)
{
	jobspec_free(&spec);
}

TestSuite(jobspec, .init = setup, .fini = teardown, .timeout = 10);

/* ---- helpers -------------------------------------------------------- */

/* @text as one printable line (at most 60 bytes shown) for a message. */
static const char *printable(const char *text, size_t len)
{
	size_t in_pos, out_pos = 0;

	for (in_pos = 0; in_pos < len && in_pos < 60; in_pos++) {
		unsigned char byte = (unsigned char)text[in_pos];

		if (byte < 0x20 || byte >= 0x7f || byte == '\\')
			out_pos += (size_t)snprintf(shown_input + out_pos, sizeof(shown_input) - out_pos, "\\x%02x",
						    byte);
		else
			shown_input[out_pos++] = (char)byte;
	}
	if (len > 60)
		snprintf(shown_input + out_pos, sizeof(shown_input) - out_pos, "... (%zu bytes)", len);
	else
		shown_input[out_pos] = '\0';
	return shown_input;
}

/* The reason is one NUL-terminated line of printable text. */
static void assert_reason_is_one_line(const char *input, size_t len, const char *reason, size_t reason_size)
{
	size_t pos;

	cr_assert(memchr(reason, '\0', reason_size) != NULL, "input '%s': reason not NUL-terminated",
		  printable(input, len));
	cr_assert(reason[0] != '\0', "input '%s': failed with an empty reason", printable(input, len));
	for (pos = 0; reason[pos]; pos++)
		cr_assert((unsigned char)reason[pos] >= 0x20 && (unsigned char)reason[pos] < 0x7f,
			  "input '%s': reason holds byte 0x%02x at %zu: '%s'", printable(input, len),
			  (unsigned char)reason[pos], pos, reason);
}

static int parse_bytes(const char *text, size_t len)
{
	jobspec_free(&spec);
	memset(why, 0, sizeof(why));
	return jobspec_parse(text, len, &spec, why, sizeof(why));
}

/* Parse @text, which must succeed. */
static void parse_ok(const char *text)
{
	int r = parse_bytes(text, strlen(text));

	cr_assert_eq(r, 0, "parse '%s': %d (%s), reason '%s'", text, r, strerror(-r), why);
}

/*
 * Parse @len bytes of @text, which must fail with @expected_err and a
 * reason that contains @expected_words (if not NULL); @spec must be left
 * empty.
 */
static void parse_fails_bytes(const char *text, size_t len, int expected_err, const char *expected_words)
{
	int r = parse_bytes(text, len);

	cr_assert_eq(r, expected_err, "parse '%s': returned %d (%s), expected %d (%s); reason '%s'",
		     printable(text, len), r, strerror(-r), expected_err, strerror(-expected_err), why);
	assert_reason_is_one_line(text, len, why, sizeof(why));
	if (expected_words)
		cr_assert(strstr(why, expected_words) != NULL, "parse '%s': reason '%s' does not say '%s'",
			  printable(text, len), why, expected_words);
	cr_assert(spec.num_dests == 0 && spec.from.path == NULL && spec.flags == 0,
		  "parse '%s' failed but left num_dests %u, from.path %p, flags %#x", printable(text, len),
		  spec.num_dests, (void *)spec.from.path, spec.flags);
}

static void parse_fails(const char *text, int expected_err, const char *expected_words)
{
	parse_fails_bytes(text, strlen(text), expected_err, expected_words);
}

static void assert_region(const char *input, const char *what, const struct jobspec_region *region,
			  const char *path, uint64_t sector, bool has_count, uint64_t count)
{
	cr_assert(region->path != NULL, "'%s': %s has no path", input, what);
	cr_assert_str_eq(region->path, path, "'%s': %s path is '%s', expected '%s'", input, what, region->path,
			 path);
	cr_assert_eq(region->sector, sector, "'%s': %s sector %llu, expected %llu", input, what,
		     (unsigned long long)region->sector, (unsigned long long)sector);
	cr_assert_eq(region->has_count, has_count, "'%s': %s has_count %d, expected %d", input, what,
		     region->has_count, has_count);
	if (has_count)
		cr_assert_eq(region->count, count, "'%s': %s count %llu, expected %llu", input, what,
			     (unsigned long long)region->count, (unsigned long long)count);
}

/* Parse a one-destination zero job and check its only region. */
static void region_is(const char *region_text, const char *path, uint64_t sector, bool has_count, uint64_t count)
{
	char line[JOBSPEC_MAX_LINE];

	snprintf(line, sizeof(line), "zero to=%s", region_text);
	parse_ok(line);
	cr_assert_eq(spec.num_dests, 1, "'%s': %u destinations", line, spec.num_dests);
	assert_region(line, "to", &spec.dests[0], path, sector, has_count, count);
}

static void number_is(const char *text, uint64_t expected)
{
	uint64_t sectors = 12345;
	int r = jobspec_parse_number(text, strlen(text), &sectors);

	cr_assert_eq(r, 0, "jobspec_parse_number('%s'): %d (%s)", text, r, strerror(-r));
	cr_assert_eq(sectors, expected, "jobspec_parse_number('%s'): %llu sectors, expected %llu", text,
		     (unsigned long long)sectors, (unsigned long long)expected);
}

static void number_fails(const char *text, int expected_err)
{
	uint64_t sectors = 12345;
	int r = jobspec_parse_number(text, strlen(text), &sectors);

	cr_assert_eq(r, expected_err, "jobspec_parse_number('%s'): %d (%s), expected %d (%s)", text, r,
		     strerror(-r), expected_err, strerror(-expected_err));
	cr_assert_eq(sectors, 12345, "jobspec_parse_number('%s') failed but changed *sectors to %llu", text,
		     (unsigned long long)sectors);
}

/* Two specs are the same job. */
static void assert_same_spec(const char *input, const struct jobspec *a, const struct jobspec *b)
{
	unsigned int dest_index;

	cr_assert_eq(a->op, b->op, "'%s': op %d vs %d", input, a->op, b->op);
	cr_assert_eq(a->flags, b->flags, "'%s': flags %#x vs %#x", input, a->flags, b->flags);
	cr_assert_eq(a->hashes, b->hashes, "'%s': hashes %#x vs %#x", input, a->hashes, b->hashes);
	cr_assert_eq(a->rate, b->rate, "'%s': rate %llu vs %llu", input, (unsigned long long)a->rate,
		     (unsigned long long)b->rate);
	cr_assert_eq(a->num_dests, b->num_dests, "'%s': %u vs %u destinations", input, a->num_dests,
		     b->num_dests);
	if (a->op == JOBSPEC_COPY)
		cr_assert_eq(a->from.is_uri, b->from.is_uri, "'%s': from is_uri %d vs %d", input, a->from.is_uri,
			     b->from.is_uri);
	for (dest_index = 0; dest_index < a->num_dests; dest_index++)
		cr_assert_eq(a->dests[dest_index].is_uri, b->dests[dest_index].is_uri, "'%s': to #%u is_uri %d vs %d",
			     input, dest_index, a->dests[dest_index].is_uri, b->dests[dest_index].is_uri);
	if (a->op == JOBSPEC_COPY)
		assert_region(input, "from", &b->from, a->from.path, a->from.sector, a->from.has_count,
			      a->from.count);
	for (dest_index = 0; dest_index < a->num_dests; dest_index++)
		assert_region(input, "to", &b->dests[dest_index], a->dests[dest_index].path,
			      a->dests[dest_index].sector, a->dests[dest_index].has_count,
			      a->dests[dest_index].count);
}

/* Render the current spec, parse the text again, and compare. */
static void assert_round_trip(const char *input, char *rendered, size_t rendered_size)
{
	struct jobspec again;
	char again_why[WHY_SIZE];
	int length = jobspec_render(&spec, rendered, rendered_size);
	int r;

	cr_assert(length > 0, "'%s': render returned %d", input, length);
	cr_assert_eq((size_t)length, strlen(rendered), "'%s': render returned %d but wrote %zu bytes", input,
		     length, strlen(rendered));
	cr_assert_eq(rendered[length - 1], '\n', "'%s': rendered '%s' does not end in a newline", input,
		     rendered);
	r = jobspec_parse(rendered, (size_t)length, &again, again_why, sizeof(again_why));
	cr_assert_eq(r, 0, "'%s' rendered as '%s' does not parse: %d (%s)", input, rendered, r, again_why);
	assert_same_spec(rendered, &spec, &again);
	jobspec_free(&again);
}

/* A "zero to=/aaa..." line of exactly @len bytes. */
static char *line_of_length(size_t len)
{
	const char *head = "zero to=/";
	char *line = malloc(len + 2);

	cr_assert(line != NULL);
	cr_assert(len >= strlen(head));
	memcpy(line, head, strlen(head));
	memset(line + strlen(head), 'a', len - strlen(head));
	line[len] = '\0';
	return line;
}

/* ---- the examples from the grammar ---------------------------------- */

Test(jobspec, copy_with_two_destinations_and_both_flags)
{
	const char *input = "copy from=/dev/sda:0+1024 to=/dev/sdb:2048+1024 to=/tmp/img flags=ignore_error,write_seq";

	parse_ok(input);
	cr_assert_eq(spec.op, JOBSPEC_COPY, "'%s': op %d", input, spec.op);
	assert_region(input, "from", &spec.from, "/dev/sda", 0, true, 1024);
	cr_assert_eq(spec.num_dests, 2, "'%s': %u destinations", input, spec.num_dests);
	assert_region(input, "to[0]", &spec.dests[0], "/dev/sdb", 2048, true, 1024);
	assert_region(input, "to[1]", &spec.dests[1], "/tmp/img", 0, false, 0);
	cr_assert_eq(spec.flags, KCOPYD_IGNORE_ERROR | KCOPYD_WRITE_SEQ, "'%s': flags %#x", input, spec.flags);
}

Test(jobspec, copy_without_counts_or_flags)
{
	const char *input = "copy from=/dev/sda to=/dev/sdb:8";

	parse_ok(input);
	assert_region(input, "from", &spec.from, "/dev/sda", 0, false, 0);
	assert_region(input, "to", &spec.dests[0], "/dev/sdb", 8, false, 0);
	cr_assert_eq(spec.flags, 0, "'%s': flags %#x", input, spec.flags);
}

Test(jobspec, zero_with_flags)
{
	const char *input = "zero to=/dev/sdc:16+32 to=/dev/sdd flags=write_seq";

	parse_ok(input);
	cr_assert_eq(spec.op, JOBSPEC_ZERO, "'%s': op %d", input, spec.op);
	cr_assert_eq(spec.from.path, NULL, "'%s': zero has a from path '%s'", input, spec.from.path);
	cr_assert_eq(spec.num_dests, 2, "'%s': %u destinations", input, spec.num_dests);
	assert_region(input, "to[0]", &spec.dests[0], "/dev/sdc", 16, true, 32);
	assert_region(input, "to[1]", &spec.dests[1], "/dev/sdd", 0, false, 0);
	cr_assert_eq(spec.flags, KCOPYD_WRITE_SEQ, "'%s': flags %#x", input, spec.flags);
}

Test(jobspec, empty_flag_list_and_each_flag_alone)
{
	parse_ok("zero to=/a flags=");
	cr_assert_eq(spec.flags, 0, "'zero to=/a flags=': flags %#x", spec.flags);
	parse_ok("zero to=/a flags=ignore_error");
	cr_assert_eq(spec.flags, KCOPYD_IGNORE_ERROR, "flags=ignore_error: flags %#x", spec.flags);
	parse_ok("zero flags=write_seq,ignore_error to=/a");
	cr_assert_eq(spec.flags, KCOPYD_IGNORE_ERROR | KCOPYD_WRITE_SEQ, "flags before to=: flags %#x",
		     spec.flags);
}

/* The sparse-copy and offload flags (kcopyd.h), alone and together, on copy and zero jobs. */
Test(jobspec, sparse_and_offload_flags)
{
	static const struct {
		const char *input;
		unsigned int flags;
		const char *canonical;
	} cases[] = {
		{ "copy from=/a:0+8 to=/b:0+8 flags=dest_zero", KCOPYD_DEST_ZERO,
		  "copy from=/a:0+8 to=/b:0+8 flags=dest_zero\n" },
		{ "copy from=/a:0+8 to=/b:0+8 flags=allocated", KCOPYD_ALLOCATED,
		  "copy from=/a:0+8 to=/b:0+8 flags=allocated\n" },
		{ "copy from=/a:0+8 to=/b:0+8 flags=no_offload", KCOPYD_NO_OFFLOAD,
		  "copy from=/a:0+8 to=/b:0+8 flags=no_offload\n" },
		/* allocated wins over dest_zero in the engine, which takes both: so does the parser. */
		{ "copy from=/a:0+8 to=/b:0+8 flags=allocated,dest_zero", KCOPYD_DEST_ZERO | KCOPYD_ALLOCATED,
		  "copy from=/a:0+8 to=/b:0+8 flags=dest_zero,allocated\n" },
		{ "copy from=/a:0+8 to=/b:0+8 flags=no_offload,verify,write_seq,allocated,ignore_error,dest_zero,no_offload",
		  JOBSPEC_FLAGS,
		  "copy from=/a:0+8 to=/b:0+8 flags=ignore_error,write_seq,dest_zero,allocated,no_offload,verify\n" },
		{ "zero to=/b:0+8 flags=allocated", KCOPYD_ALLOCATED, "zero to=/b:0+8 flags=allocated\n" },
		{ "zero to=/b:0+8 flags=dest_zero,no_offload", KCOPYD_DEST_ZERO | KCOPYD_NO_OFFLOAD,
		  "zero to=/b:0+8 flags=dest_zero,no_offload\n" },
	};
	char rendered[RENDER_SIZE];
	size_t case_index;
	int length;

	cr_assert_eq(JOBSPEC_FLAGS, KCOPYD_IGNORE_ERROR | KCOPYD_WRITE_SEQ | KCOPYD_DEST_ZERO | KCOPYD_ALLOCATED |
					    KCOPYD_NO_OFFLOAD | KCOPYD_VERIFY,
		     "JOBSPEC_FLAGS is %#x", JOBSPEC_FLAGS);
	for (case_index = 0; case_index < sizeof(cases) / sizeof(cases[0]); case_index++) {
		parse_ok(cases[case_index].input);
		cr_assert_eq(spec.flags, cases[case_index].flags, "'%s': flags %#x, expected %#x",
			     cases[case_index].input, spec.flags, cases[case_index].flags);
		length = jobspec_render(&spec, rendered, sizeof(rendered));
		cr_assert_str_eq(rendered, cases[case_index].canonical, "render of '%s': '%s' (%d), expected '%s'",
				 cases[case_index].input, rendered, length, cases[case_index].canonical);
		assert_round_trip(cases[case_index].input, rendered, sizeof(rendered));
	}
	/* The names are exact: no case folding, no dashes, no abbreviations. */
	parse_fails("copy from=/a to=/b flags=DEST_ZERO", -EINVAL, "unknown flag 'DEST_ZERO'");
	parse_fails("copy from=/a to=/b flags=dest-zero", -EINVAL, "unknown flag 'dest-zero'");
	parse_fails("copy from=/a to=/b flags=sparse", -EINVAL,
		    "unknown flag 'sparse' (known: ignore_error, write_seq, dest_zero, allocated, no_offload, verify)");
	parse_fails("zero to=/b flags=allocated,offload", -EINVAL, "unknown flag 'offload'");
}

/* ---- hash=, rate= and flags=verify (issue 17) ------------------------ */

Test(jobspec, hashes_parse_and_render_in_bit_order)
{
	static const struct {
		const char *input;
		unsigned int hashes;
		const char *canonical;
	} cases[] = {
		{ "copy from=/a:0+8 to=/b:0+8 hash=sha256", KCOPYD_HASH_SHA256,
		  "copy from=/a:0+8 to=/b:0+8 hash=sha256\n" },
		/* kcopyd_hash_parse()'s other spellings and any case; the canonical names in bit order. */
		{ "copy from=/a:0+8 to=/b:0+8 hash=xxh3-128,B2,sha256,MD5", KCOPYD_HASH_XXH128 | KCOPYD_HASH_BLAKE2B512 |
		  KCOPYD_HASH_SHA256 | KCOPYD_HASH_MD5, "copy from=/a:0+8 to=/b:0+8 hash=md5,sha256,blake2b512,xxh128\n" },
		{ "copy from=/a:0+8 to=/b:0+8 hash=sha1,sha1,blake2b", KCOPYD_HASH_SHA1 | KCOPYD_HASH_BLAKE2B512,
		  "copy from=/a:0+8 to=/b:0+8 hash=sha1,blake2b512\n" },
		{ "copy hash=md5,sha1,sha256,sha512,blake2b512,xxh128 from=/a:0+8 to=/b:0+8 flags=verify",
		  KCOPYD_HASH_ALL,
		  "copy from=/a:0+8 to=/b:0+8 flags=verify hash=md5,sha1,sha256,sha512,blake2b512,xxh128\n" },
	};
	char rendered[RENDER_SIZE];

	for (size_t index = 0; index < sizeof(cases) / sizeof(cases[0]); index++) {
		parse_ok(cases[index].input);
		cr_assert_eq(spec.hashes, cases[index].hashes, "'%s': hashes %#x, expected %#x", cases[index].input,
			     spec.hashes, cases[index].hashes);
		jobspec_render(&spec, rendered, sizeof(rendered));
		cr_assert_str_eq(rendered, cases[index].canonical, "render of '%s': '%s', expected '%s'",
				 cases[index].input, rendered, cases[index].canonical);
		assert_round_trip(cases[index].input, rendered, sizeof(rendered));
		jobspec_free(&spec);
	}
}

Test(jobspec, hash_and_verify_refusals)
{
	parse_fails("copy from=/a to=/b hash=sha3", -EINVAL,
		    "unknown hash 'sha3' (known: md5, sha1, sha256, sha512, blake2b512, xxh128)");
	parse_fails("copy from=/a to=/b hash=sha256,crc32", -EINVAL, "unknown hash 'crc32'");
	parse_fails("copy from=/a to=/b hash=averyveryverylongname", -EINVAL, "unknown hash 'averyveryverylongname'");
	parse_fails("copy from=/a to=/b hash=", -EINVAL, "hash= names no algorithm");
	parse_fails("copy from=/a to=/b hash=sha256,", -EINVAL, "empty algorithm name");
	parse_fails("copy from=/a to=/b hash=md5 hash=sha1", -EINVAL, "hash= given twice");
	parse_fails("zero to=/b hash=sha256", -EINVAL, "zero takes no hash=");
	parse_fails("zero to=/b flags=verify", -EINVAL, "zero takes no flags=verify");
	parse_fails("zero to=/b flags=allocated,verify", -EINVAL, "zero takes no flags=verify");
	parse_fails("copy from=/a to=/b flags=VERIFY", -EINVAL, "unknown flag 'VERIFY'");
}

Test(jobspec, rates_in_bytes_with_the_region_units)
{
	static const struct {
		const char *text;
		uint64_t bytes;
	} good[] = {
		{ "4096", 4096 }, { "4K", 4096 }, { "4k", 4096 }, { "4KiB", 4096 }, { "16M", 16ull << 20 },
		{ "16MiB", 16ull << 20 }, { "1g", 1ull << 30 }, { "1T", 1ull << 40 }, { "10000000", 10000000 },
		{ "8192B", 8192 }, { "4097", 4097 },
	};
	static const struct {
		const char *text;
		int error;
		const char *words;
	} bad[] = {
		{ "0", -EINVAL, "below 4096 bytes per second" }, { "4095", -EINVAL, "below 4096" },
		{ "3K", -EINVAL, "below 4096" }, { "0M", -EINVAL, "below 4096" }, { "", -EINVAL, "is not a number" },
		{ "16MB", -EINVAL, "1000-based unit" }, { "16 M", -EINVAL, "is not a number" },
		{ "-16M", -EINVAL, "is not a number" }, { "fast", -EINVAL, "is not a number" },
		{ "16Mi", -EINVAL, "is not a number" }, { "1.5M", -EINVAL, "is not a number" },
		{ "18446744073709551616", -ERANGE, "does not fit in 64 bits" },
		{ "16777216T", -ERANGE, "does not fit in 64 bits" },
	};
	char rendered[RENDER_SIZE], line[128];
	uint64_t bytes;
	int r;

	for (size_t index = 0; index < sizeof(good) / sizeof(good[0]); index++) {
		bytes = 0;
		r = jobspec_parse_rate(good[index].text, strlen(good[index].text), &bytes, why, sizeof(why));
		cr_assert(r == 0 && bytes == good[index].bytes, "rate '%s': %d (%s), %llu bytes, expected %llu",
			  good[index].text, r, why, (unsigned long long)bytes, (unsigned long long)good[index].bytes);
		/* The same in a description, rendered as bytes. */
		snprintf(line, sizeof(line), "copy from=/a:0+8 to=/b:0+8 rate=%s", good[index].text);
		parse_ok(line);
		cr_assert_eq(spec.rate, good[index].bytes, "'%s': rate %llu", line, (unsigned long long)spec.rate);
		jobspec_render(&spec, rendered, sizeof(rendered));
		snprintf(line, sizeof(line), "copy from=/a:0+8 to=/b:0+8 rate=%llu\n",
			 (unsigned long long)good[index].bytes);
		cr_assert_str_eq(rendered, line, "rate=%s rendered '%s'", good[index].text, rendered);
		assert_round_trip(line, rendered, sizeof(rendered));
		jobspec_free(&spec);
	}
	for (size_t index = 0; index < sizeof(bad) / sizeof(bad[0]); index++) {
		bytes = 12345;
		r = jobspec_parse_rate(bad[index].text, strlen(bad[index].text), &bytes, why, sizeof(why));
		cr_assert_eq(r, bad[index].error, "rate '%s': %d (%s), expected %d", bad[index].text, r, why,
			     bad[index].error);
		cr_assert(strstr(why, bad[index].words), "rate '%s': reason '%s' does not say '%s'", bad[index].text, why,
			  bad[index].words);
		cr_assert_eq(bytes, 12345, "rate '%s' failed but set %llu", bad[index].text, (unsigned long long)bytes);
		if (strchr(bad[index].text, ' '))
			continue;	/* a blank splits the token: another reason */
		snprintf(line, sizeof(line), "copy from=/a to=/b rate=%s", bad[index].text);
		parse_fails(line, bad[index].error, bad[index].words);
	}
	parse_fails("copy from=/a to=/b rate=4K rate=8K", -EINVAL, "rate= given twice");
	/* A rate counts bytes read: a zero job reads none, and is refused one rather than ignoring it (as kcopy). */
	parse_fails("zero to=/b:0+8 rate=1M", -EINVAL, "zero takes no rate=");
}

Test(jobspec, the_longest_hash_and_rate_fit_the_canonical_bound)
{
	/* A line of JOBSPEC_MAX_LINE bytes whose hash= and rate= render longer than written. */
	const char *tail = " hash=b2,b2,md5,sha1,sha256,sha512,xxh3-128 rate=1T";
	size_t len = JOBSPEC_MAX_LINE;
	char *line = malloc(len + 1), *rendered = malloc(JOBSPEC_MAX_CANONICAL);
	const char *head = "copy from=/a to=/";
	int r;

	cr_assert(line && rendered);
	memcpy(line, head, strlen(head));
	memset(line + strlen(head), 'b', len - strlen(head) - strlen(tail));
	memcpy(line + len - strlen(tail), tail, strlen(tail) + 1);
	parse_ok(line);
	spec.from.has_count = spec.dests[0].has_count = true;
	spec.from.count = spec.dests[0].count = UINT64_MAX / 2;
	r = jobspec_render(&spec, rendered, JOBSPEC_MAX_CANONICAL);
	cr_assert(r > 0, "the canonical form of a %zu-byte line with hash= and rate= does not fit: %d", len, r);
	assert_round_trip(line, rendered, JOBSPEC_MAX_CANONICAL);
	free(line);
	free(rendered);
}

Test(jobspec, keys_in_any_order)
{
	const char *input = "copy to=/b:1+2 flags=write_seq from=/a:3+4 to=/c";

	parse_ok(input);
	assert_region(input, "from", &spec.from, "/a", 3, true, 4);
	assert_region(input, "to[0]", &spec.dests[0], "/b", 1, true, 2);
	assert_region(input, "to[1]", &spec.dests[1], "/c", 0, false, 0);
}

/* ---- numbers ---------------------------------------------------------- */

Test(jobspec, plain_numbers_are_sectors)
{
	number_is("0", 0);
	number_is("8", 8);
	number_is("1000", 1000);	/* sectors: 1000 bytes cannot be written without a suffix */
	number_is("007", 7);
	number_is("18446744073709551615", UINT64_MAX);
}

Test(jobspec, byte_suffixes_are_powers_of_1024_in_either_case)
{
	number_is("4K", 8);
	number_is("4k", 8);
	number_is("1K", 2);
	number_is("1M", MiB_SECTORS);
	number_is("1m", MiB_SECTORS);
	number_is("3M", 3 * MiB_SECTORS);
	number_is("1G", GiB_SECTORS);
	number_is("1g", GiB_SECTORS);
	number_is("1T", TiB_SECTORS);
	number_is("2t", 2 * TiB_SECTORS);
	number_is("0K", 0);
	number_is("4096B", 8);	/* bytes, as kcopy(1) takes them */
	number_is("512b", 1);
	number_is("4KiB", 8);	/* as kcopy(1) always took them */
	number_is("1MiB", MiB_SECTORS);
	number_is("1gib", GiB_SECTORS);
	number_is("1TIB", TiB_SECTORS);
	/* The largest T that fits: sectors = value << 31. */
	number_is("8589934591T", 8589934591ull << 31);
	region_is("/dev/sda:4K+1M", "/dev/sda", 8, true, MiB_SECTORS);
	region_is("/dev/sda:1g+4k", "/dev/sda", GiB_SECTORS, true, 8);
}

Test(jobspec, malformed_numbers)
{
	number_fails("", -EINVAL);
	number_fails("-1", -EINVAL);
	number_fails("+1", -EINVAL);
	number_fails(" 1", -EINVAL);
	number_fails("1 ", -EINVAL);
	number_fails("0x10", -EINVAL);
	number_fails("4KB", -EINVAL);	/* 1000-based to many tools: refused (test_proto.c has the reason) */
	number_fails("4Ki", -EINVAL);
	number_fails("4iB", -EINVAL);
	number_fails("4BiB", -EINVAL);
	number_fails("1000B", -EINVAL);	/* bytes, but not a whole number of sectors */
	number_fails("1000b", -EINVAL);
	number_fails("K", -EINVAL);
	number_fails("1.5K", -EINVAL);
	number_fails("4P", -EINVAL);
	number_fails("1+2", -EINVAL);
}

Test(jobspec, numbers_that_do_not_fit)
{
	number_fails("18446744073709551616", -ERANGE);
	number_fails("99999999999999999999999999", -ERANGE);
	number_fails("8589934592T", -ERANGE);
	number_fails("17592186044416G", -ERANGE);	/* 2^44 G = 2^74 bytes = 2^65 sectors */
	parse_fails("zero to=/a:18446744073709551616", -ERANGE, "sector");
	parse_fails("zero to=/a:0+18446744073709551616", -ERANGE, "count");
	parse_fails("zero to=/a:8589934592T", -ERANGE, "does not fit");
}

Test(jobspec, sector_plus_count_past_2_64)
{
	parse_fails("zero to=/a:18446744073709551615+1", -ERANGE, "2^64");
	parse_fails("copy from=/a:1+18446744073709551615 to=/b", -ERANGE, "from=");
	/* The last sector that can be named: ends exactly at 2^64 - 1. */
	region_is("/a:18446744073709551614+1", "/a", 18446744073709551614ull, true, 1);
	region_is("/a:18446744073709551615+0", "/a", UINT64_MAX, true, 0);
}

/* ---- paths ------------------------------------------------------------ */

Test(jobspec, path_alone_starts_at_zero_without_count)
{
	region_is("/dev/sdb", "/dev/sdb", 0, false, 0);
	region_is("/dev/sdb:0", "/dev/sdb", 0, false, 0);
	region_is("/dev/sdb:8", "/dev/sdb", 8, false, 0);
	region_is("/dev/sdb:8+16", "/dev/sdb", 8, true, 16);
	region_is("/", "/", 0, false, 0);
	region_is("/a=b", "/a=b", 0, false, 0);
	region_is("/caf\xc3\xa9.img:1", "/caf\xc3\xa9.img", 1, false, 0);
}

Test(jobspec, colons_in_paths)
{
	region_is("/dev/disk/by-path/pci-0000:00:1f.2-ata-1", "/dev/disk/by-path/pci-0000:00:1f.2-ata-1", 0,
		  false, 0);
	region_is("/dev/disk/by-path/pci-0000:00:1f.2-ata-1:8+16", "/dev/disk/by-path/pci-0000:00:1f.2-ata-1", 8,
		  true, 16);
	region_is("/dev/disk/by-path/pci-0000:00:1f.2-ata-1:4K", "/dev/disk/by-path/pci-0000:00:1f.2-ata-1", 8,
		  false, 0);
	region_is("/dev/x:abc", "/dev/x:abc", 0, false, 0);
	region_is("/dev/x:abc:2", "/dev/x:abc", 2, false, 0);
	region_is("/a:1:2", "/a:1", 2, false, 0);
	region_is("/a:", "/a:", 0, false, 0);
	region_is("/a::5", "/a:", 5, false, 0);
	/* Not SECTOR[+COUNT] after the colon, so all of it is the path. */
	region_is("/a:8+", "/a:8+", 0, false, 0);
	region_is("/a:+8", "/a:+8", 0, false, 0);
	region_is("/a:1.5", "/a:1.5", 0, false, 0);
	/* A name that itself ends in :NUMBER: write the sector, or quote it. */
	region_is("/dev/disk/by-path/pci-0000:00:1f.2-scsi-0:0:0:0", "/dev/disk/by-path/pci-0000:00:1f.2-scsi-0:0:0",
		  0, false, 0);
	region_is("/dev/disk/by-path/pci-0000:00:1f.2-scsi-0:0:0:0:0+8",
		  "/dev/disk/by-path/pci-0000:00:1f.2-scsi-0:0:0:0", 0, true, 8);
	region_is("\"/dev/disk/by-path/pci-0000:00:1f.2-scsi-0:0:0:0\"",
		  "/dev/disk/by-path/pci-0000:00:1f.2-scsi-0:0:0:0", 0, false, 0);
}

Test(jobspec, quoted_paths)
{
	region_is("\"/mnt/my disk.img\":8+16", "/mnt/my disk.img", 8, true, 16);
	region_is("\"/mnt/my disk.img\"", "/mnt/my disk.img", 0, false, 0);
	region_is("\"/mnt/a:b c\":1", "/mnt/a:b c", 1, false, 0);
	region_is("\"/plain\"", "/plain", 0, false, 0);
	region_is("\"/tab\there\"", "/tab\there", 0, false, 0);
	region_is("\"/x:abc\":3", "/x:abc", 3, false, 0);
}

Test(jobspec, escapes_inside_quotes)
{
	region_is("\"/a \\\"quoted\\\" name\"", "/a \"quoted\" name", 0, false, 0);
	region_is("\"/back\\\\slash\":2+2", "/back\\slash", 2, true, 2);
	region_is("\"/ends in backslash\\\\\"", "/ends in backslash\\", 0, false, 0);
	parse_fails("zero to=\"/a\\nb\"", -EINVAL, "escape");
}

Test(jobspec, a_quoted_path_in_a_full_line)
{
	const char *input = "copy from=\"/mnt/my disk.img\":8+16 to=\"/mnt/other one\" to=/dev/sdb";

	parse_ok(input);
	assert_region(input, "from", &spec.from, "/mnt/my disk.img", 8, true, 16);
	assert_region(input, "to[0]", &spec.dests[0], "/mnt/other one", 0, false, 0);
	assert_region(input, "to[1]", &spec.dests[1], "/dev/sdb", 0, false, 0);
}

Test(jobspec, bad_quoting)
{
	parse_fails("zero to=\"/mnt/my disk.img", -EINVAL, "unterminated quote");
	parse_fails("zero to=\"/mnt/my disk.img\\\"", -EINVAL, "unterminated quote");
	parse_fails("zero to=\"/mnt/x\\", -EINVAL, "unterminated quote");
	parse_fails("zero to=\"", -EINVAL, "unterminated quote");
	parse_fails("zero to=\"/a\"x", -EINVAL, "after the quoted path");
	parse_fails("zero to=\"/a\":abc", -EINVAL, "after the quoted path");
	parse_fails("zero to=\"/a\":8+", -EINVAL, "after the quoted path");
	parse_fails("zero to=\"/a\"\"/b\"", -EINVAL, "after the quoted path");
	parse_fails("zero to=/a\"b c\"", -EINVAL, "quote inside an unquoted path");
	parse_fails("zero to=\"rel path\"", -EINVAL, "relative path");
}

Test(jobspec, relative_and_empty_paths)
{
	parse_fails("zero to=rel/path", -EINVAL, "to=\"rel/path\": relative path");
	parse_fails("copy from=dev/sda to=/b", -EINVAL, "from=\"dev/sda\": relative path");
	parse_fails("zero to=./x:8", -EINVAL, "relative path");
	parse_fails("zero to=", -EINVAL, "empty path");
	parse_fails("zero to=\"\"", -EINVAL, "empty path");
	parse_fails("zero to=\"\":8", -EINVAL, "empty path");
	parse_fails("zero to=:8+1", -EINVAL, "empty path");
	parse_fails("copy from= to=/b", -EINVAL, "empty path");
}

Test(jobspec, parse_region_on_its_own)
{
	struct jobspec_region region;
	char region_why[WHY_SIZE];
	const char *text = "/dev/x:8+16";
	int r = jobspec_parse_region(text, strlen(text), &region, region_why, sizeof(region_why));

	cr_assert_eq(r, 0, "jobspec_parse_region('%s'): %d (%s)", text, r, region_why);
	assert_region(text, "region", &region, "/dev/x", 8, true, 16);
	free(region.path);

	/* Only the given length counts: the rest of the buffer is not read. */
	r = jobspec_parse_region(text, 6, &region, region_why, sizeof(region_why));
	cr_assert_eq(r, 0, "jobspec_parse_region('%.6s'): %d (%s)", text, r, region_why);
	assert_region("/dev/x (6 bytes)", "region", &region, "/dev/x", 0, false, 0);
	free(region.path);

	text = "rel";
	r = jobspec_parse_region(text, strlen(text), &region, region_why, sizeof(region_why));
	cr_assert_eq(r, -EINVAL, "jobspec_parse_region('%s'): %d, expected -EINVAL", text, r);
	cr_assert_str_eq(region_why, "\"rel\": relative path", "jobspec_parse_region('%s'): reason '%s'", text,
			 region_why);
	cr_assert_eq(region.path, NULL, "jobspec_parse_region('%s') failed but left a path", text);

	/* Blanks and control bytes can only reach it directly, not through a line. */
	text = "/a b";
	r = jobspec_parse_region(text, strlen(text), &region, region_why, sizeof(region_why));
	cr_assert_eq(r, -EINVAL, "jobspec_parse_region('%s'): %d, expected -EINVAL", text, r);
	r = jobspec_parse_region("/a\0b", 4, &region, region_why, sizeof(region_why));
	cr_assert_eq(r, -EINVAL, "jobspec_parse_region('/a\\0b'): %d, expected -EINVAL (a NUL would cut the path)",
		     r);
	assert_reason_is_one_line("/a\0b", 4, region_why, sizeof(region_why));
	r = jobspec_parse_region("\"/a\0b\"", 6, &region, region_why, sizeof(region_why));
	cr_assert_eq(r, -EINVAL, "jobspec_parse_region('\"/a\\0b\"'): %d, expected -EINVAL", r);
	r = jobspec_parse_region(NULL, 0, &region, NULL, 0);
	cr_assert_eq(r, -EINVAL, "jobspec_parse_region(NULL): %d, expected -EINVAL", r);
}

/* ---- keys and counts of keys -------------------------------------------- */

Test(jobspec, operations)
{
	parse_fails("move from=/a to=/b", -EINVAL, "unknown operation 'move'");
	parse_fails("COPY from=/a to=/b", -EINVAL, "unknown operation 'COPY'");
	parse_fails("from=/a to=/b", -EINVAL, "unknown operation 'from=/a'");
	parse_fails("", -EINVAL, "empty");
	parse_fails("\n", -EINVAL, "empty");
	parse_fails(" \t ", -EINVAL, "empty");
	parse_fails("copy", -EINVAL, "from=");
	parse_fails("zero", -EINVAL, "no destination");
}

Test(jobspec, from_rules)
{
	parse_fails("copy to=/b", -EINVAL, "copy needs a from=");
	parse_fails("copy from=/a from=/c to=/b", -EINVAL, "from= given twice");
	parse_fails("zero from=/a to=/b", -EINVAL, "zero takes no from=");
}

Test(jobspec, unknown_keys_flags_and_bare_words)
{
	parse_fails("copy from=/a to=/b speed=10", -EINVAL, "unknown key 'speed'");
	parse_fails("copy from=/a To=/b", -EINVAL, "unknown key 'To'");
	parse_fails("copy from=/a =/b", -EINVAL, "unknown key ''");
	parse_fails("copy from=/a to=/b flags=ignore_error,fast", -EINVAL, "unknown flag 'fast'");
	parse_fails("copy from=/a to=/b flags=IGNORE_ERROR", -EINVAL, "unknown flag 'IGNORE_ERROR'");
	parse_fails("copy from=/a to=/b flags=write_seq,", -EINVAL, "empty flag name");
	parse_fails("copy from=/a to=/b flags=,", -EINVAL, "empty flag name");
	parse_fails("copy from=/a to=/b flags=write_seq flags=ignore_error", -EINVAL, "flags= given twice");
	parse_fails("copy from=/a to=/b extra", -EINVAL, "'extra': expected KEY=VALUE");
	parse_fails("copy from=/a to = /b", -EINVAL, "expected KEY=VALUE");
}

Test(jobspec, destinations_from_none_to_32_and_33)
{
	char line[JOBSPEC_MAX_LINE];
	size_t used;
	unsigned int dest_index;

	parse_fails("copy from=/a", -EINVAL, "no destination");
	parse_fails("zero flags=write_seq", -EINVAL, "no destination");

	used = (size_t)snprintf(line, sizeof(line), "copy from=/src");
	for (dest_index = 0; dest_index < KCOPYD_MAX_REGIONS; dest_index++)
		used += (size_t)snprintf(line + used, sizeof(line) - used, " to=/d%u:%u+1", dest_index, dest_index);
	parse_ok(line);
	cr_assert_eq(spec.num_dests, KCOPYD_MAX_REGIONS, "32 to=: %u destinations", spec.num_dests);
	for (dest_index = 0; dest_index < KCOPYD_MAX_REGIONS; dest_index++) {
		char path[16];

		snprintf(path, sizeof(path), "/d%u", dest_index);
		assert_region("32 to=", "to", &spec.dests[dest_index], path, dest_index, true, 1);
	}

	snprintf(line + used, sizeof(line) - used, " to=/d32");
	parse_fails(line, -EINVAL, "too many destinations");
}

/* ---- the line ----------------------------------------------------------- */

Test(jobspec, blanks_and_tabs)
{
	const char *input = " \t copy\t\tfrom=/a:1+2   to=/b \t to=/c\t \n";

	parse_ok(input);
	assert_region("blanks", "from", &spec.from, "/a", 1, true, 2);
	cr_assert_eq(spec.num_dests, 2, "blanks: %u destinations", spec.num_dests);
	assert_region("blanks", "to[1]", &spec.dests[1], "/c", 0, false, 0);
}

Test(jobspec, trailing_newline_is_optional)
{
	parse_ok("zero to=/a:1+1\n");
	assert_region("with newline", "to", &spec.dests[0], "/a", 1, true, 1);
	parse_ok("zero to=/a:1+1");
	assert_region("without newline", "to", &spec.dests[0], "/a", 1, true, 1);
	parse_fails("zero to=/a\n\n", -EINVAL, "control character \\x0a");
}

Test(jobspec, control_characters_are_refused)
{
	parse_fails_bytes("zero to=/a\0b", 12, -EINVAL, "control character \\x00 at byte 10");
	parse_fails_bytes("zero to=/a\0", 11, -EINVAL, "\\x00");
	parse_fails("zero to=/a\nzero to=/b", -EINVAL, "\\x0a");
	parse_fails("zero to=/a\nzero to=/b\n", -EINVAL, "\\x0a");
	parse_fails("zero to=/a\r\n", -EINVAL, "\\x0d");
	parse_fails("zero to=\"/a\x01\"", -EINVAL, "\\x01");
	parse_fails("zero to=/a\x7f", -EINVAL, "\\x7f");
	parse_fails("\x1b[2Jzero to=/a", -EINVAL, "\\x1b");
}

Test(jobspec, binary_junk_gives_a_clean_short_reason)
{
	unsigned char junk[300];
	size_t pos;

	for (pos = 0; pos < sizeof(junk); pos++)
		junk[pos] = (unsigned char)(pos * 37 + 11);
	parse_fails_bytes((const char *)junk, sizeof(junk), -EINVAL, NULL);

	/* High bytes are allowed in the line, but shown as \xNN in a reason, cut to 40 bytes. */
	memset(junk, 0xff, sizeof(junk));
	memcpy(junk, "frob", 4);
	parse_fails_bytes((const char *)junk, sizeof(junk), -EINVAL, "unknown operation 'frob\\xff");
	cr_assert(strstr(why, "...") != NULL, "a 300-byte token is shown whole: '%s'", why);
	cr_assert(strlen(why) < 250, "reason for a 300-byte token is %zu bytes: '%s'", strlen(why), why);
}

Test(jobspec, line_length_limit)
{
	char *line = line_of_length(JOBSPEC_MAX_LINE);
	int r;

	r = parse_bytes(line, JOBSPEC_MAX_LINE);
	cr_assert_eq(r, 0, "a %d-byte line: %d (%s)", JOBSPEC_MAX_LINE, r, why);
	cr_assert_eq(strlen(spec.dests[0].path), JOBSPEC_MAX_LINE - strlen("zero to="),
		     "a %d-byte line: path of %zu bytes", JOBSPEC_MAX_LINE, strlen(spec.dests[0].path));

	line[JOBSPEC_MAX_LINE] = '\n';
	r = parse_bytes(line, JOBSPEC_MAX_LINE + 1);
	cr_assert_eq(r, 0, "a %d-byte line and a newline: %d (%s)", JOBSPEC_MAX_LINE, r, why);
	free(line);

	line = line_of_length(JOBSPEC_MAX_LINE + 1);
	parse_fails_bytes(line, JOBSPEC_MAX_LINE + 1, -E2BIG, "4097 bytes, at most 4096");
	line[JOBSPEC_MAX_LINE + 1] = '\n';
	parse_fails_bytes(line, JOBSPEC_MAX_LINE + 2, -E2BIG, "at most 4096");
	free(line);
}

/*
 * What the daemon renders: every count filled in, as it does once the
 * regions are open (a from= without COUNT runs to the end of the source, a
 * to= takes the source's count).  UINT64_MAX - SECTOR is the longest count
 * a region can have: 20 digits.
 */
static void fill_counts_as_the_daemon(struct jobspec *filled)
{
	unsigned int dest_index;

	if (filled->op == JOBSPEC_COPY && !filled->from.has_count) {
		filled->from.count = UINT64_MAX - filled->from.sector;
		filled->from.has_count = true;
	}
	for (dest_index = 0; dest_index < filled->num_dests; dest_index++) {
		if (!filled->dests[dest_index].has_count) {
			filled->dests[dest_index].count = UINT64_MAX - filled->dests[dest_index].sector;
			filled->dests[dest_index].has_count = true;
		}
	}
}

/*
 * Parse @line (which must be accepted), fill its counts as the daemon
 * does, render it, and check that the canonical text parses back to the
 * same spec and renders to the same text again; returns its length.
 */
static size_t assert_daemon_rendering_parses(const char *what, const char *line)
{
	static char rendered[JOBSPEC_MAX_CANONICAL], rendered_again[JOBSPEC_MAX_CANONICAL];
	struct jobspec again;
	char again_why[WHY_SIZE];
	int length, length_again, r;

	r = parse_bytes(line, strlen(line));
	cr_assert_eq(r, 0, "%s (%zu bytes): parse returned %d (%s)", what, strlen(line), r, why);
	fill_counts_as_the_daemon(&spec);
	length = jobspec_render(&spec, rendered, sizeof(rendered));
	cr_assert(length > 0, "%s (%zu bytes): render returned %d into %d bytes", what, strlen(line), length,
		  JOBSPEC_MAX_CANONICAL);
	r = jobspec_parse(rendered, (size_t)length, &again, again_why, sizeof(again_why));
	cr_assert_eq(r, 0, "%s: its %d-byte canonical form does not parse: %d (%s)", what, length, r, again_why);
	assert_same_spec(what, &spec, &again);
	length_again = jobspec_render(&again, rendered_again, sizeof(rendered_again));
	jobspec_free(&again);
	cr_assert(length_again == length && memcmp(rendered, rendered_again, (size_t)length) == 0,
		  "%s: the canonical form (%d bytes) renders again as %d different bytes", what, length,
		  length_again);
	return (size_t)length;
}

/* "copy from=PATH" and 32 " to=PATH:SECTOR", no counts, padded by path length up to @len bytes. */
static char *line_with_32_destinations(size_t len, const char *dir, uint64_t first_sector)
{
	char *line = malloc(len + 1);
	size_t fixed, path_room;
	unsigned int dest_index;
	size_t used;

	cr_assert(line != NULL);
	/* The bytes besides the padding: "copy from=" DIR "/s" and " to=" DIR "/dNN:SECTOR" each. */
	fixed = strlen("copy from=") + strlen(dir) + 2;
	for (dest_index = 0; dest_index < KCOPYD_MAX_REGIONS; dest_index++)
		fixed += (size_t)snprintf(NULL, 0, " to=%s/d%02u:%llu", dir, dest_index,
					  (unsigned long long)(first_sector + dest_index));
	cr_assert(fixed < len, "the fixed part is %zu bytes, more than %zu", fixed, len);
	path_room = (len - fixed) / (KCOPYD_MAX_REGIONS + 1);	/* padding ("/." pairs) per path */
	path_room -= path_room % 2;
	used = (size_t)snprintf(line, len + 1, "copy from=%s", dir);
	for (size_t pad = 0; pad < path_room; pad += 2)
		used += (size_t)snprintf(line + used, len + 1 - used, "/.");
	used += (size_t)snprintf(line + used, len + 1 - used, "/s");
	for (dest_index = 0; dest_index < KCOPYD_MAX_REGIONS; dest_index++) {
		used += (size_t)snprintf(line + used, len + 1 - used, " to=%s", dir);
		for (size_t pad = 0; pad < path_room; pad += 2)
			used += (size_t)snprintf(line + used, len + 1 - used, "/.");
		used += (size_t)snprintf(line + used, len + 1 - used, "/d%02u:%llu", dest_index,
					 (unsigned long long)(first_sector + dest_index));
	}
	/* The rest in blanks before the first token. */
	memmove(line + (len - used), line, used + 1);
	memset(line, ' ', len - used);
	return line;
}

Test(jobspec, the_canonical_form_of_the_largest_descriptions_parses)
{
	char *line, *backslashes;
	size_t rendered_len, path_len;
	unsigned int region_index;

	/* The case of issue 12: 32 destinations in ~3866 bytes render to more than 4096. */
	line = line_with_32_destinations(3866, "/srv/images", 1000000);
	rendered_len = assert_daemon_rendering_parses("32 destinations in 3866 bytes", line);
	cr_assert(rendered_len > JOBSPEC_MAX_LINE + 1, "32 destinations in 3866 bytes render to %zu bytes only",
		  rendered_len);
	free(line);

	/* The same at the limit, with the largest sectors that leave room for a count. */
	line = line_with_32_destinations(JOBSPEC_MAX_LINE, "/srv/images", UINT64_MAX - 100);
	assert_daemon_rendering_parses("32 destinations in 4096 bytes, 20-digit sectors", line);
	free(line);

	/*
	 * The longest rendering there is: 33 regions of bare backslashes,
	 * each doubled and quoted, every count 20 digits; and the same with
	 * every flag, whose names take room from the paths.
	 */
	for (unsigned int with_flags = 0; with_flags < 2; with_flags++) {
		const char *flags = with_flags ? " flags=ignore_error,write_seq,dest_zero,allocated,no_offload" : "";

		path_len = (JOBSPEC_MAX_LINE - strlen("copy") - strlen(flags) -
			    (KCOPYD_MAX_REGIONS + 1) * strlen(" from=")) /
			   (KCOPYD_MAX_REGIONS + 1);
		backslashes = malloc(path_len + 1);
		cr_assert(backslashes != NULL);
		backslashes[0] = '/';
		memset(backslashes + 1, '\\', path_len - 1);
		backslashes[path_len] = '\0';
		line = malloc(JOBSPEC_MAX_LINE + 1);
		cr_assert(line != NULL);
		strcpy(line, "copy from=");
		strcat(line, backslashes);
		for (region_index = 0; region_index < KCOPYD_MAX_REGIONS; region_index++) {
			strcat(line, " to=");
			strcat(line, backslashes);
		}
		strcat(line, flags);
		cr_assert(strlen(line) <= JOBSPEC_MAX_LINE, "the backslash line is %zu bytes", strlen(line));
		rendered_len = assert_daemon_rendering_parses(with_flags ? "33 paths of backslashes, every flag"
									 : "33 paths of backslashes",
							      line);
		cr_assert(rendered_len > 2 * JOBSPEC_MAX_LINE - 2 * strlen(flags),
			  "33 paths of backslashes render to %zu bytes only", rendered_len);
		free(line);
		free(backslashes);
	}
}

Test(jobspec, over_4096_bytes_only_a_canonical_description)
{
	static char rendered[JOBSPEC_MAX_CANONICAL];
	char *line = line_with_32_destinations(4000, "/srv/images", 7);
	char *long_line;
	int length, r;

	parse_ok(line);
	fill_counts_as_the_daemon(&spec);
	length = jobspec_render(&spec, rendered, sizeof(rendered));
	cr_assert(length > JOBSPEC_MAX_LINE + 1, "the canonical form is %d bytes", length);
	free(line);

	/* Accepted, with or without its newline. */
	r = parse_bytes(rendered, (size_t)length);
	cr_assert_eq(r, 0, "a %d-byte canonical description: %d (%s)", length, r, why);
	r = parse_bytes(rendered, (size_t)length - 1);
	cr_assert_eq(r, 0, "a %d-byte canonical description without its newline: %d (%s)", length - 1, r, why);

	/* The same job written otherwise (a blank before it, an empty flags= after it) is too long. */
	long_line = malloc((size_t)length + sizeof(" flags="));	/* the room of the longer of the two */
	cr_assert(long_line != NULL);
	long_line[0] = ' ';
	memcpy(long_line + 1, rendered, (size_t)length + 1);
	parse_fails_bytes(long_line, (size_t)length + 1, -E2BIG, "at most 4096");
	memcpy(long_line, rendered, (size_t)length + 1);
	long_line[length - 1] = '\0';
	strcat(long_line, " flags=");
	parse_fails(long_line, -E2BIG, "at most 4096");
	free(long_line);

	/* Nor is one that renders to itself but leaves a count out: the daemon always writes them. */
	long_line = line_with_32_destinations(4200, "/srv/images", 7);
	parse_fails(long_line + strspn(long_line, " "), -E2BIG, "at most 4096");
	free(long_line);

	/* Past JOBSPEC_MAX_CANONICAL_LINE nothing is taken. */
	long_line = line_of_length(JOBSPEC_MAX_CANONICAL_LINE + 1);
	parse_fails(long_line, -E2BIG, "at most 4096");
	free(long_line);
}

Test(jobspec, reason_buffer_may_be_small_or_absent)
{
	char tiny[6];
	int r;

	memset(tiny, 'x', sizeof(tiny));
	r = jobspec_parse("zero to=rel", 11, &spec, tiny, sizeof(tiny));
	cr_assert_eq(r, -EINVAL, "'zero to=rel' with a 6-byte reason: %d", r);
	cr_assert_eq(tiny[5], '\0', "a 6-byte reason is not NUL-terminated: '%.6s'", tiny);
	cr_assert_eq(strlen(tiny), 5, "a 6-byte reason holds '%s'", tiny);

	r = jobspec_parse("zero to=rel", 11, &spec, NULL, 0);
	cr_assert_eq(r, -EINVAL, "'zero to=rel' without a reason buffer: %d", r);
	r = jobspec_parse("zero to=/a", 10, &spec, NULL, 0);
	cr_assert_eq(r, 0, "'zero to=/a' without a reason buffer: %d", r);
	jobspec_free(&spec);
	r = jobspec_parse(NULL, 0, &spec, why, sizeof(why));
	cr_assert_eq(r, -EINVAL, "NULL text: %d", r);
	assert_reason_is_one_line("(NULL)", 6, why, sizeof(why));
}

Test(jobspec, every_failure_has_a_reason)
{
	static const struct {
		const char *input;
		int err;
	} failures[] = {
		{ "", -EINVAL },
		{ "copy", -EINVAL },
		{ "copy from=/a", -EINVAL },
		{ "copy to=/a", -EINVAL },
		{ "zero", -EINVAL },
		{ "zero from=/a to=/b", -EINVAL },
		{ "move to=/a", -EINVAL },
		{ "copy from=/a from=/a to=/b", -EINVAL },
		{ "copy from=/a to=/b bogus=1", -EINVAL },
		{ "copy from=/a to=/b flags=nope", -EINVAL },
		{ "copy from=/a to=/b flags= flags=", -EINVAL },
		{ "copy from=/a to=b", -EINVAL },
		{ "copy from=/a to=", -EINVAL },
		{ "copy from=/a to=\"/b", -EINVAL },
		{ "copy from=/a to=\"/b\"c", -EINVAL },
		{ "copy from=/a to=/b\"c\"", -EINVAL },
		{ "copy from=/a to=\"\\q\"", -EINVAL },
		{ "copy from=/a to=/b:99999999999999999999", -ERANGE },
		{ "copy from=/a to=/b:18446744073709551615+1", -ERANGE },
		{ "copy from=/a to=/b\x01", -EINVAL },
		{ "copy from=/a to=/b word", -EINVAL },
	};
	size_t case_index;

	for (case_index = 0; case_index < sizeof(failures) / sizeof(failures[0]); case_index++)
		parse_fails(failures[case_index].input, failures[case_index].err, NULL);
}

Test(jobspec, spec_can_be_reused)
{
	parse_ok("copy from=/a to=/b to=/c");
	jobspec_free(&spec);
	cr_assert_eq(spec.num_dests, 0, "jobspec_free left %u destinations", spec.num_dests);
	parse_ok("zero to=/d");
	cr_assert_str_eq(spec.dests[0].path, "/d", "second parse: path '%s'", spec.dests[0].path);
	jobspec_free(&spec);
	jobspec_free(&spec);	/* freeing twice is harmless: the first one emptied it */
}

/* ---- rendering ---------------------------------------------------------- */

Test(jobspec, render_canonical_form)
{
	static const struct {
		const char *input;
		const char *canonical;
	} cases[] = {
		{ "copy from=/dev/sda:0+1024 to=/dev/sdb:2048+1024",
		  "copy from=/dev/sda:0+1024 to=/dev/sdb:2048+1024\n" },
		{ "  copy to=/b:4K+1M flags=write_seq,ignore_error from=/a:1+2K\n",
		  "copy from=/a:1+4 to=/b:8+2048 flags=ignore_error,write_seq\n" },
		{ "zero to=/dev/sdc:16+32 flags=write_seq", "zero to=/dev/sdc:16+32 flags=write_seq\n" },
		{ "zero to=/dev/sdc flags=", "zero to=/dev/sdc:0\n" },
		{ "zero to=\"/mnt/plain\":1+1", "zero to=/mnt/plain:1+1\n" },
		{ "zero to=\"/mnt/my disk.img\":8+16", "zero to=\"/mnt/my disk.img\":8+16\n" },
		{ "zero to=/dev/disk/by-path/pci-0000:00:1f.2-ata-1:0+8",
		  "zero to=/dev/disk/by-path/pci-0000:00:1f.2-ata-1:0+8\n" },
		{ "zero to=\"/a \\\"b\\\" \\\\c\":1+1", "zero to=\"/a \\\"b\\\" \\\\c\":1+1\n" },
		{ "zero to=\"/tab\there\":1+1", "zero to=\"/tab\there\":1+1\n" },
	};
	char rendered[RENDER_SIZE];
	size_t case_index;
	int length;

	for (case_index = 0; case_index < sizeof(cases) / sizeof(cases[0]); case_index++) {
		parse_ok(cases[case_index].input);
		length = jobspec_render(&spec, rendered, sizeof(rendered));
		cr_assert_eq(length, (int)strlen(cases[case_index].canonical),
			     "render of '%s': returned %d, expected %zu ('%s')", cases[case_index].input, length,
			     strlen(cases[case_index].canonical), rendered);
		cr_assert_str_eq(rendered, cases[case_index].canonical, "render of '%s': '%s', expected '%s'",
				 cases[case_index].input, rendered, cases[case_index].canonical);
	}
}

Test(jobspec, render_round_trip)
{
	static const char *const inputs[] = {
		"copy from=/dev/sda:0+1024 to=/dev/sdb:2048+1024 flags=ignore_error,write_seq",
		"copy from=\"/mnt/my \\\"odd\\\" disk:1:2 \\\\ name\":8+16 to=\"/x y\":0+16 to=/a:b:c:3+16",
		"copy from=/dev/disk/by-path/pci-0000:00:1f.2-ata-1:8+8 to=/dev/x:abc:0+8",
		"copy from=\"/dev/disk/by-path/pci-0000:00:1f.2-scsi-0:0:0:0\" to=/a:",
		"zero to=\"/mnt/a:b c\":1 to=/caf\xc3\xa9:2+2 to=\"/tab\there\" flags=write_seq",
		"zero to=\"/ends in backslash\\\\\" to=\"/\\\"\":18446744073709551614+1",
		"zero to=/a:8+ to=/a:+8 to=/a::1",
	};
	char rendered[RENDER_SIZE];
	size_t input_index;

	for (input_index = 0; input_index < sizeof(inputs) / sizeof(inputs[0]); input_index++) {
		parse_ok(inputs[input_index]);
		assert_round_trip(inputs[input_index], rendered, sizeof(rendered));
	}
}

Test(jobspec, render_a_spec_built_by_hand)
{
	struct jobspec built = { 0 };
	char rendered[RENDER_SIZE];
	char odd_path[] = "/my \"disk\":1:2\\x";
	char plain_path[] = "/dev/sdb";
	int length;

	built.op = JOBSPEC_COPY;
	built.from = (struct jobspec_region){ .path = odd_path, .sector = 3, .count = 5, .has_count = true };
	built.num_dests = 1;
	built.dests[0] = (struct jobspec_region){ .path = plain_path, .sector = 7, .has_count = false };
	built.flags = KCOPYD_IGNORE_ERROR;
	length = jobspec_render(&built, rendered, sizeof(rendered));
	cr_assert_str_eq(rendered, "copy from=\"/my \\\"disk\\\":1:2\\\\x\":3+5 to=/dev/sdb:7 flags=ignore_error\n",
			 "hand-built spec rendered as '%s'", rendered);
	cr_assert_eq(length, (int)strlen(rendered), "render returned %d for '%s'", length, rendered);

	/* And it parses back to the same. */
	jobspec_free(&spec);
	cr_assert_eq(jobspec_parse(rendered, (size_t)length, &spec, why, sizeof(why)), 0, "'%s': %s", rendered,
		     why);
	assert_same_spec(rendered, &built, &spec);
}

Test(jobspec, render_into_too_small_a_buffer)
{
	const char *input = "copy from=\"/mnt/my disk\":0+8 to=/b:1+8 flags=write_seq";
	const char *canonical = "copy from=\"/mnt/my disk\":0+8 to=/b:1+8 flags=write_seq\n";
	size_t needed = strlen(canonical) + 1;
	char rendered[RENDER_SIZE];
	size_t size;
	int length;

	parse_ok(input);
	for (size = 0; size < needed; size++) {
		memset(rendered, 'x', sizeof(rendered));
		length = jobspec_render(&spec, rendered, size);
		cr_assert_eq(length, -ENOSPC, "render into %zu bytes (needs %zu): returned %d", size, needed, length);
		if (size)
			cr_assert_eq(rendered[0], '\0', "render into %zu bytes failed but left '%.*s'", size,
				     (int)size, rendered);
		cr_assert_eq(rendered[size], 'x', "render into %zu bytes wrote past the end", size);
	}
	length = jobspec_render(&spec, rendered, needed);
	cr_assert_eq(length, (int)needed - 1, "render into exactly %zu bytes: returned %d", needed, length);
	cr_assert_str_eq(rendered, canonical, "render into exactly %zu bytes: '%s'", needed, rendered);
	length = jobspec_render(&spec, NULL, 0);
	cr_assert_eq(length, -ENOSPC, "render into NULL: returned %d", length);
}

/* ---- robustness --------------------------------------------------------- */

/* xorshift64*: deterministic, so a failure here repeats. */
static uint64_t next_random(uint64_t *state)
{
	*state ^= *state >> 12;
	*state ^= *state << 25;
	*state ^= *state >> 27;
	return *state * 0x2545f4914f6cdd1dull;
}

static const char *pick(uint64_t *state, const char *const *choices, size_t count)
{
	return choices[next_random(state) % count];
}

#define PICK(state, choices) pick(state, choices, sizeof(choices) / sizeof((choices)[0]))

/*
 * Random lines built from the grammar's own pieces, some of them wrong,
 * and some then damaged by a random byte: every one either parses,
 * renders and parses back to the same spec, or fails with a clean reason.
 */
Test(jobspec, random_lines_parse_or_fail_cleanly)
{
	static const char *const operations[] = { "copy", "zero", "copy", "zero", "move", "" };
	static const char *const keys[] = { "to=", "to=", "to=", "from=", "flags=", "x=", "" };
	static const char *const paths[] = {
		"/dev/sda", "\"/a b\"", "/x:1", "\"/q\\\"\\\\\"", "/d:abc", "rel", "", "\"/u", "/\xc3\xa9",
		"/dev/disk/by-path/pci-0000:00:1f.2-ata-1", "\"/t\tab\"",
	};
	static const char *const suffixes[] = {
		"", "", ":8", ":4K+1m", ":18446744073709551615+0", ":1+18446744073709551615", ":+", ":x", ":0+8G",
	};
	static const char *const flag_lists[] = { "", "write_seq", "ignore_error,write_seq", "fast", "," };
	static const char *const blanks[] = { " ", " ", "\t", "  \t" };
	static const char junk_bytes[] = { '\0', '\n', '"', '\\', ':', '+', '=', ' ', 'K', '\xff', '\x01' };
	uint64_t state = 0x1234567887654321ull;
	char line[1024], rendered[RENDER_SIZE];
	unsigned int round, accepted = 0;

	for (round = 0; round < 20000; round++) {
		unsigned int field_index, field_count = (unsigned int)(next_random(&state) % 5);
		size_t len;
		int r;

		len = (size_t)snprintf(line, sizeof(line), "%s", PICK(&state, operations));
		for (field_index = 0; field_index < field_count; field_index++) {
			const char *key = PICK(&state, keys);

			len += (size_t)snprintf(line + len, sizeof(line) - len, "%s%s", PICK(&state, blanks), key);
			if (strcmp(key, "flags=") == 0)
				len += (size_t)snprintf(line + len, sizeof(line) - len, "%s", PICK(&state, flag_lists));
			else
				len += (size_t)snprintf(line + len, sizeof(line) - len, "%s%s", PICK(&state, paths),
							PICK(&state, suffixes));
		}
		if (next_random(&state) % 2)
			line[len++] = '\n';
		if (next_random(&state) % 8 == 0 && len > 0)
			line[next_random(&state) % len] = junk_bytes[next_random(&state) % sizeof(junk_bytes)];

		r = parse_bytes(line, len);
		if (r == 0) {
			accepted++;
			assert_round_trip(printable(line, len), rendered, sizeof(rendered));
		} else {
			cr_assert(r == -EINVAL || r == -ERANGE, "random line '%s': returned %d", printable(line, len), r);
			assert_reason_is_one_line(line, len, why, sizeof(why));
		}
	}
	cr_assert(accepted > 500, "only %u of 20000 random lines parsed: the generator is too noisy", accepted);
}
