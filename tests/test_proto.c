/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The text protocol (src/proto/): regions with NBD URIs, as kcopy parses
 * an argument (jobspec_parse_region_flags() with JOBSPEC_REGION_WORD) and
 * as ctl parses a description (jobspec_parse()), the same function; the
 * number grammar both take; descriptions rendered and parsed back; and
 * the status text and error line, rendered by kcopydfs and parsed by
 * kcopy --via.  Pure functions, no mount.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/jobspec.h"
#include "proto/status.h"

#define WHY_SIZE 512
#define LINE_SIZE JOBSPEC_MAX_CANONICAL

/* One region expected: its text, path or URI, whether a URI, sector, count. */
struct region_case {
	const char *text;
	const char *path;
	bool is_uri;
	uint64_t sector;
	bool has_count;
	uint64_t count;
};

static void assert_region_is(const char *how, const struct region_case *expected, const struct jobspec_region *got)
{
	cr_assert_str_eq(got->path, expected->path, "%s '%s': path '%s', expected '%s'", how, expected->text, got->path,
			 expected->path);
	cr_assert_eq(got->is_uri, expected->is_uri, "%s '%s': is_uri %d, expected %d", how, expected->text, got->is_uri,
		     expected->is_uri);
	cr_assert_eq(got->sector, expected->sector, "%s '%s': sector %llu, expected %llu", how, expected->text,
		     (unsigned long long)got->sector, (unsigned long long)expected->sector);
	cr_assert_eq(got->has_count, expected->has_count, "%s '%s': has_count %d, expected %d", how, expected->text,
		     got->has_count, expected->has_count);
	if (expected->has_count)
		cr_assert_eq(got->count, expected->count, "%s '%s': count %llu, expected %llu", how, expected->text,
			     (unsigned long long)got->count, (unsigned long long)expected->count);
}

/* Render @spec, parse it back, compare the region at @index of it to @expected. */
static void assert_round_trip(const struct jobspec *spec, const struct region_case *expected)
{
	char rendered[LINE_SIZE], why[WHY_SIZE];
	struct jobspec again;
	int len = jobspec_render(spec, rendered, sizeof(rendered));
	int r;

	cr_assert(len > 0, "'%s': render returned %d", expected->text, len);
	r = jobspec_parse(rendered, (size_t)len, &again, why, sizeof(why));
	cr_assert_eq(r, 0, "'%s' rendered as '%s' does not parse: %s", expected->text, rendered, why);
	assert_region_is("parse(render())", expected, &again.dests[0]);
	jobspec_free(&again);
}

/*
 * The one grammar, both ways: as a kcopy argument and as ctl's to=, the
 * same result, and rendered and parsed back unchanged (with and without
 * the count kcopydfs fills in).
 */
static void region_case_holds(const struct region_case *expected)
{
	struct jobspec_region region;
	struct jobspec spec;
	char line[LINE_SIZE], why[WHY_SIZE];
	int r;

	r = jobspec_parse_region_flags(expected->text, strlen(expected->text), JOBSPEC_REGION_WORD, &region, why,
				       sizeof(why));
	cr_assert_eq(r, 0, "kcopy argument '%s': %d (%s)", expected->text, r, why);
	assert_region_is("kcopy argument", expected, &region);
	free(region.path);

	snprintf(line, sizeof(line), "zero to=%s\n", expected->text);
	r = jobspec_parse(line, strlen(line), &spec, why, sizeof(why));
	cr_assert_eq(r, 0, "ctl '%s': %d (%s)", line, r, why);
	assert_region_is("ctl to=", expected, &spec.dests[0]);
	assert_round_trip(&spec, expected);
	if (!spec.dests[0].has_count) {
		struct region_case counted = *expected;

		spec.dests[0].has_count = true;
		spec.dests[0].count = counted.count = 77;
		counted.has_count = true;
		assert_round_trip(&spec, &counted);
	}
	jobspec_free(&spec);
}

Test(proto, uri_regions_of_the_grammar)
{
	static const struct region_case cases[] = {
		{ "nbd://host:10809", "nbd://host:10809", true, 0, false, 0 },
		{ "nbd://host:10809/:8", "nbd://host:10809/", true, 8, false, 0 },
		{ "nbd://host/disk:8+16", "nbd://host/disk", true, 8, true, 16 },
		{ "nbd://[::1]:10809/disk:8", "nbd://[::1]:10809/disk", true, 8, false, 0 },
		{ "nbd://[::1]:10809", "nbd://[::1]:10809", true, 0, false, 0 },
		{ "nbd://[::1]:10809/", "nbd://[::1]:10809/", true, 0, false, 0 },
		{ "nbd://host/a:b", "nbd://host/a:b", true, 0, false, 0 },
		{ "nbd://host/vm:1", "nbd://host/vm", true, 1, false, 0 },
		{ "nbd://host/vm%3A1", "nbd://host/vm%3A1", true, 0, false, 0 },
		{ "nbd://host/vm:1:0", "nbd://host/vm:1", true, 0, false, 0 },
		{ "nbd+unix:///disk?socket=/run/s.sock:8", "nbd+unix:///disk?socket=/run/s.sock", true, 8, false, 0 },
		{ "nbd+unix:///?socket=/run/s.sock", "nbd+unix:///?socket=/run/s.sock", true, 0, false, 0 },
		{ "nbds://host/disk?tls-psk-file=/k.psk:1M+4KiB", "nbds://host/disk?tls-psk-file=/k.psk", true, 2048,
		  true, 8 },
		{ "nbds+unix:///e?socket=/s&tls-psk-file=/k:0", "nbds+unix:///e?socket=/s&tls-psk-file=/k", true, 0,
		  false, 0 },
		{ "NBD://Host/x:4", "NBD://Host/x", true, 4, false, 0 },
		{ "nbd+vsock://2:10809/e:3+1", "nbd+vsock://2:10809/e", true, 3, true, 1 },
		{ "\"nbd://host:10809\":8", "nbd://host:10809", true, 8, false, 0 },
		{ "\"nbd://host/vm:1\"", "nbd://host/vm:1", true, 0, false, 0 },
		{ "\"nbd://host/my disk\":2+2", "nbd://host/my disk", true, 2, true, 2 },
		/* Not URIs: local paths, colons as ever. */
		{ "/nbd://x:8", "/nbd://x", false, 8, false, 0 },
		{ "/dev/sda:1MiB+1M", "/dev/sda", false, 2048, true, 2048 },
	};

	for (size_t index = 0; index < sizeof(cases) / sizeof(cases[0]); index++)
		region_case_holds(&cases[index]);
}

Test(proto, a_local_file_named_like_a_uri)
{
	struct jobspec_region region;
	char why[WHY_SIZE];
	int r;

	/* On kcopy's command line: ./nbd:... is a relative path, not a URI. */
	r = jobspec_parse_region_flags("./nbd://x:8", 11, JOBSPEC_REGION_WORD, &region, why, sizeof(why));
	cr_assert_eq(r, 0, "./nbd://x:8: %s", why);
	cr_assert(!region.is_uri && !strcmp(region.path, "./nbd://x") && region.sector == 8,
		  "./nbd://x:8: path '%s' is_uri %d sector %llu", region.path, region.is_uri,
		  (unsigned long long)region.sector);
	free(region.path);
	/* "nbd:" without "//" is no URI either: a relative path, refused by ctl. */
	r = jobspec_parse_region("nbd:x", 5, &region, why, sizeof(why));
	cr_assert_eq(r, -EINVAL, "nbd:x in ctl: %d", r);
	cr_assert(strstr(why, "relative path"), "nbd:x in ctl: '%s'", why);
	cr_assert_eq(jobspec_is_uri("nbd:x", 5), false);
	cr_assert_eq(jobspec_is_uri("nbd:/", 5), false);
	cr_assert_eq(jobspec_is_uri("nbds+unix://", 12), true);
	cr_assert_eq(jobspec_is_uri("nbd+tcp://", 10), false);
	cr_assert_eq(jobspec_is_uri("nbd://", 5), false, "only 5 bytes of it");
}

Test(proto, uri_refusals_name_the_region)
{
	static const struct {
		const char *text;
		const char *words;
	} refused[] = {
		{ "zero to=nbd://host/my disk", "'disk'" },			/* a blank splits the token */
		{ "zero to=nbd://host/x:1MB", "1000-based" },
		{ "zero to=nbd://host/x:3+1000B", "multiple of 512" },
		{ "zero to=\"nbd://host/x\":y", "only :SECTOR" },
		{ "zero to=nbd://host/x:99999999999999999999", "64 bits" },
	};
	struct jobspec spec;
	char why[WHY_SIZE];

	for (size_t index = 0; index < sizeof(refused) / sizeof(refused[0]); index++) {
		int r = jobspec_parse(refused[index].text, strlen(refused[index].text), &spec, why, sizeof(why));

		cr_assert(r < 0, "'%s' was taken", refused[index].text);
		cr_assert(strstr(why, refused[index].words), "'%s': reason '%s' does not say %s", refused[index].text,
			  why, refused[index].words);
	}
}

/* kcopy and ctl take the same numbers: the union of what each took. */
Test(proto, numbers_the_same_for_kcopy_and_ctl)
{
	static const struct {
		const char *text;
		int result;
		uint64_t sectors;
		const char *problem;
	} numbers[] = {
		{ "8", 0, 8, NULL },		{ "4096B", 0, 8, NULL },	{ "1K", 0, 2, NULL },
		{ "1KiB", 0, 2, NULL },		{ "1M", 0, 2048, NULL },	{ "1MiB", 0, 2048, NULL },
		{ "1mib", 0, 2048, NULL },	{ "1G", 0, 2097152, NULL },	{ "1GiB", 0, 2097152, NULL },
		{ "1TiB", 0, 2147483648ull, NULL },
		{ "1KB", -EINVAL, 0, "1000-based" },	{ "1MB", -EINVAL, 0, "1000-based" },
		{ "1mb", -EINVAL, 0, "1000-based" },	{ "2GB", -EINVAL, 0, "1000-based" },
		{ "1TB", -EINVAL, 0, "1000-based" },	{ "100B", -EINVAL, 0, "multiple of 512" },
		{ "18446744073709551616", -ERANGE, 0, "64 bits" },
		{ "17179869184T", -ERANGE, 0, "64 bits" },
	};
	struct jobspec_region region;
	char arg[64], line[128], why[WHY_SIZE];
	struct jobspec spec;

	for (size_t index = 0; index < sizeof(numbers) / sizeof(numbers[0]); index++) {
		int r;

		snprintf(arg, sizeof(arg), "/dev/x:%s+%s", numbers[index].text, numbers[index].text);
		r = jobspec_parse_region_flags(arg, strlen(arg), JOBSPEC_REGION_WORD, &region, why, sizeof(why));
		cr_assert_eq(r, numbers[index].result, "kcopy '%s': %d, expected %d (%s)", arg, r,
			     numbers[index].result, why);
		if (r == 0) {
			cr_assert(region.sector == numbers[index].sectors && region.count == numbers[index].sectors,
				  "kcopy '%s': %llu+%llu", arg, (unsigned long long)region.sector,
				  (unsigned long long)region.count);
			free(region.path);
		} else {
			cr_assert(strstr(why, numbers[index].problem), "kcopy '%s': reason '%s' does not say '%s'", arg,
				  why, numbers[index].problem);
		}
		snprintf(line, sizeof(line), "zero to=%s", arg);
		r = jobspec_parse(line, strlen(line), &spec, why, sizeof(why));
		cr_assert_eq(r, numbers[index].result, "ctl '%s': %d, expected %d (%s)", line, r,
			     numbers[index].result, why);
		if (r == 0) {
			cr_assert_eq(spec.dests[0].sector, numbers[index].sectors, "ctl '%s'", line);
			jobspec_free(&spec);
		} else {
			cr_assert(strstr(why, numbers[index].problem), "ctl '%s': reason '%s' does not say '%s'", line,
				  why, numbers[index].problem);
		}
	}
}

Test(proto, kcopy_words_take_what_the_shell_split)
{
	struct jobspec_region region;
	char why[WHY_SIZE];
	int r;

	r = jobspec_parse_region_flags("my disk.img:8", 13, JOBSPEC_REGION_WORD, &region, why, sizeof(why));
	cr_assert_eq(r, 0, "my disk.img:8: %s", why);
	cr_assert(!strcmp(region.path, "my disk.img") && region.sector == 8, "path '%s'", region.path);
	free(region.path);
	r = jobspec_parse_region_flags("it\"s", 4, JOBSPEC_REGION_WORD, &region, why, sizeof(why));
	cr_assert_eq(r, 0, "it\"s: %s", why);
	free(region.path);
	/* The same text in a description: a blank splits, a relative path is refused. */
	r = jobspec_parse_region("my disk.img:8", 13, &region, why, sizeof(why));
	cr_assert_eq(r, -EINVAL);
	r = jobspec_parse_region("disk.img:8", 10, &region, why, sizeof(why));
	cr_assert_eq(r, -EINVAL);
	cr_assert(strstr(why, "relative path"), "'%s'", why);
}

Test(proto, descriptions_with_uris_render_and_parse_back)
{
	static const char *const lines[] = {
		"copy from=nbd://host:10809 to=/dev/sdb:0+16 to=nbd+unix:///e?socket=/s:8+16",
		"copy from=\"nbd://[::1]:10809\":4+4 to=nbds://h/x:y:0+4 flags=allocated",
		"zero to=nbd://host/vm:1:0+8 to=\"nbd://host/a b\":0+8",
	};
	static const char *const canonical[] = {
		"copy from=\"nbd://host:10809\":0 to=/dev/sdb:0+16 to=nbd+unix:///e?socket=/s:8+16\n",
		"copy from=\"nbd://[::1]:10809\":4+4 to=nbds://h/x:y:0+4 flags=allocated\n",
		"zero to=nbd://host/vm:1:0+8 to=\"nbd://host/a b\":0+8\n",
	};
	char rendered[LINE_SIZE], again_text[LINE_SIZE], why[WHY_SIZE];
	struct jobspec spec, again;

	for (size_t index = 0; index < sizeof(lines) / sizeof(lines[0]); index++) {
		int r = jobspec_parse(lines[index], strlen(lines[index]), &spec, why, sizeof(why));

		cr_assert_eq(r, 0, "'%s': %s", lines[index], why);
		cr_assert(jobspec_render(&spec, rendered, sizeof(rendered)) > 0);
		cr_assert_str_eq(rendered, canonical[index], "'%s' rendered as '%s'", lines[index], rendered);
		r = jobspec_parse(rendered, strlen(rendered), &again, why, sizeof(why));
		cr_assert_eq(r, 0, "'%s': %s", rendered, why);
		cr_assert(jobspec_render(&again, again_text, sizeof(again_text)) > 0);
		cr_assert_str_eq(again_text, rendered, "not a fixed point: '%s' then '%s'", rendered, again_text);
		jobspec_free(&again);
		jobspec_free(&spec);
	}
}

/* ---- the status text ---- */

Test(proto, status_renders_and_parses_back)
{
	struct proto_status status = {
		.state = "failed", .sectors_done = 100, .sectors_total = 200, .read_err = 1, .write_err = 0x5,
		.error = "read error on nbd://h/x sectors 8+8: EIO (Input/output error)", .bytes_per_sec = 12345,
		.elapsed = 1.5, .uid = 65534, .gid = 65534, .rejected = NULL, .has_counts = true,
		.sectors_data = 90, .sectors_zero = 10, .sectors_offloaded = 0, .has_checkpoint = true,
		.checkpoint = 8,
	};
	struct proto_status parsed;
	char text[2048];
	int len = proto_status_render(&status, text, sizeof(text));

	cr_assert(len > 0 && (size_t)len < sizeof(text));
	cr_assert(strstr(text, "rejected: none\n"), "%s", text);
	cr_assert_eq(proto_status_parse(text, &parsed), 0);
	cr_assert_str_eq(parsed.state, "failed");
	cr_assert(parsed.sectors_done == 100 && parsed.sectors_total == 200 && parsed.read_err == 1 &&
		  parsed.write_err == 0x5 && parsed.uid == 65534 && parsed.gid == 65534);
	cr_assert_str_eq(parsed.error, status.error);
	cr_assert_str_eq(parsed.rejected, "none");
	cr_assert(parsed.has_counts && parsed.sectors_data == 90 && parsed.sectors_zero == 10);
	cr_assert(parsed.has_checkpoint && parsed.checkpoint == 8);
	cr_assert(proto_is_final_state(parsed.state));
}

Test(proto, status_of_an_older_daemon_and_broken_ones)
{
	char old[] = "state: done\nprogress: 8/8\nread_err: 0\nwrite_err: 0x0\nerror: none\n"
		     "bytes_per_sec: 0\nelapsed: 0.001\nowner: 0:0\nrejected: none\n";
	char no_error[] = "state: done\nprogress: 8/8\nread_err: 0\nwrite_err: 0x0\n";
	char bad_progress[] = "state: done\nprogress: 8\nread_err: 0\nwrite_err: 0x0\nerror: none\n";
	char bad_write_err[] = "state: done\nprogress: 8/8\nread_err: 0\nwrite_err: 5\nerror: none\n";
	char field[16];
	struct proto_status parsed;

	cr_assert_eq(proto_status_parse(old, &parsed), 0);
	cr_assert(!parsed.has_counts && !parsed.has_checkpoint, "an old daemon's status has neither");
	cr_assert_eq(proto_status_parse(no_error, &parsed), -EPROTO);
	cr_assert_eq(proto_status_parse(bad_progress, &parsed), -EPROTO);
	cr_assert_eq(proto_status_parse(bad_write_err, &parsed), -EPROTO);
	cr_assert(proto_status_field("a: 1\nstate: running\n", "state", field, sizeof(field)));
	cr_assert_str_eq(field, "running");
	cr_assert(!proto_status_field("a: 1\n", "state", field, sizeof(field)));
	cr_assert(!proto_is_final_state("running") && !proto_is_final_state("interrupted"));
}

Test(proto, failure_line_renders_and_parses_back_with_odd_names)
{
	const char *dests[KCOPYD_MAX_REGIONS] = { "/d0", "nbd://h/x; write error on /d0 (to #0) sectors 1+1: EIO (x)",
						  "nbd+unix:///e?socket=/s" };
	const char *source = "nbd://h:10809/src sectors 9";
	struct kcopyd_result result = { 0 }, parsed = { 0 };
	const char *unparsed = NULL;
	char line[2048];

	result.read.sector = 8;
	result.read.count = 8;
	result.read.error = -ECONNRESET;
	result.write[1].sector = 16;
	result.write[1].count = 4;
	result.write[1].error = -EIO;
	result.write[2].sector = 0;
	result.write[2].count = 1;
	result.write[2].error = -ENOSPC;
	cr_assert(proto_failure_render(&result, source, dests, line, sizeof(line)) > 0);
	cr_assert(proto_failure_parse(line, source, dests, 3, &parsed, &unparsed), "'%s' did not parse at '%s'", line,
		  unparsed);
	cr_assert(parsed.read.sector == 8 && parsed.read.count == 8 && parsed.read.error == -ECONNRESET);
	cr_assert(parsed.write[1].sector == 16 && parsed.write[1].count == 4 && parsed.write[1].error == -EIO);
	cr_assert(parsed.write[2].error == -ENOSPC && parsed.write[0].error == 0);

	memset(&parsed, 0, sizeof(parsed));
	cr_assert(!proto_failure_parse("flush error on /d0: EIO", source, dests, 3, &parsed, &unparsed));
	cr_assert_str_eq(unparsed, "flush error on /d0: EIO");
	result = (struct kcopyd_result){ .cancelled = 1 };
	proto_failure_render(&result, source, dests, line, sizeof(line));
	cr_assert_str_eq(line, "none (cancelled)");
}

/* kcopydfs appends what an NBD server said of a failure: --via must still read the ranges before it. */
Test(proto, failure_line_with_what_the_server_said)
{
	const char *dests[KCOPYD_MAX_REGIONS] = { "/d0" };
	const char *source = "nbd+unix:///?socket=/s.sock";
	struct kcopyd_result result = { 0 }, parsed = { 0 };
	const char *unparsed = NULL;
	char line[2048];

	result.read.sector = 16384;
	result.read.count = 2048;
	result.read.error = -EIO;
	proto_failure_render(&result, source, dests, line, sizeof(line));
	proto_failure_append_said(line, sizeof(line), source,
				  "the server failed a read; write error on /d0 (to #0) sectors 1+1: EIO (x)");
	cr_assert(strstr(line, "; nbd+unix:///?socket=/s.sock said: the server failed a read;"), "%s", line);
	cr_assert(proto_failure_parse(line, source, dests, 1, &parsed, &unparsed), "'%s' did not parse at '%s'", line,
		  unparsed);
	cr_assert(parsed.read.sector == 16384 && parsed.read.count == 2048 && parsed.read.error == -EIO);
	cr_assert_eq(parsed.write[0].error, 0, "the server's words were taken for a failure");
	cr_assert(unparsed && strncmp(unparsed, "nbd+unix:///?socket=/s.sock said: ", 34) == 0, "%s", unparsed);
	memset(&parsed, 0, sizeof(parsed));
	proto_failure_render(&result, source, dests, line, sizeof(line));
	cr_assert(proto_failure_parse(line, source, dests, 1, &parsed, &unparsed));
	cr_assert_null(unparsed);
	/* A line already full takes nothing more. */
	strcpy(line, "abc");
	proto_failure_append_said(line, 4, source, "x");
	cr_assert_str_eq(line, "abc");
}

/* ---- issue 17: the paused state, rate:, hash: and verify: lines, verify errors ---- */

/* Render @status, parse it back into @parsed (its text kept in @text). */
static void render_and_parse(const struct proto_status *status, char *text, size_t len, struct proto_status *parsed)
{
	int rendered = proto_status_render(status, text, len);

	cr_assert(rendered > 0 && (size_t)rendered < len, "rendered %d bytes", rendered);
	cr_assert_eq(proto_status_parse(text, parsed), 0, "does not parse back:\n%s", text);
}

Test(proto, trust_lines_render_and_parse_back)
{
	struct proto_status status = {
		.state = "done", .sectors_done = 8, .sectors_total = 8, .error = "none", .rate = 16777216,
		.hashes = KCOPYD_HASH_SHA256 | KCOPYD_HASH_MD5, .hash_state = PROTO_HASH_DONE,
		.verify = PROTO_VERIFY_OK,
	};
	struct proto_status parsed;
	char text[4096], copy[4096];

	status.digests[0].size = 16;	/* md5 */
	status.digests[2].size = 32;	/* sha256 */
	for (unsigned int byte = 0; byte < 32; byte++) {
		status.digests[0].bytes[byte % 16] = (unsigned char)(0xf0 + byte % 16);
		status.digests[2].bytes[byte] = (unsigned char)(byte * 7);
	}
	render_and_parse(&status, text, sizeof(text), &parsed);
	proto_status_render(&status, copy, sizeof(copy));
	/* The lines, after the checkpoint, in this order; md5 first (bit order), lowercase hex. */
	cr_assert(strstr(copy, "checkpoint: 0\nrate: 16777216\nhash: md5:f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff\n"
			       "hash: sha256:00070e151c232a31383f464d545b626970777e858c939aa1a8afb6bdc4cbd2d9\n"
			       "verify: ok\n"),
		  "the new lines:\n%s", copy);
	cr_assert(parsed.has_rate && parsed.rate == 16777216, "rate %llu", (unsigned long long)parsed.rate);
	cr_assert_eq(parsed.hashes, status.hashes, "hashes %#x", parsed.hashes);
	cr_assert_eq(parsed.hash_state, PROTO_HASH_DONE);
	cr_assert(parsed.digests[0].size == 16 && !memcmp(parsed.digests[0].bytes, status.digests[0].bytes, 16));
	cr_assert(parsed.digests[2].size == 32 && !memcmp(parsed.digests[2].bytes, status.digests[2].bytes, 32));
	cr_assert(parsed.has_verify && parsed.verify == PROTO_VERIFY_OK && parsed.verify_from == 0);
}

Test(proto, every_form_of_the_trust_lines)
{
	static const struct {
		const char *state;
		uint64_t rate;
		enum proto_hash_state hash_state;
		uint64_t resumed_at;
		enum proto_verify verify;
		uint64_t verified, verify_total, verify_from;
		const char *lines;
	} cases[] = {
		{ "paused", 4096, PROTO_HASH_PENDING, 0, PROTO_VERIFY_PENDING, 0, 0, 0,
		  "rate: 4096\nhash: xxh128:pending\nverify: pending\n" },
		{ "running", 0, PROTO_HASH_PENDING, 0, PROTO_VERIFY_RUNNING, 1024, 4096, 0,
		  "rate: none\nhash: xxh128:pending\nverify: running 1024/4096\n" },
		{ "cancelled", 0, PROTO_HASH_NONE, 0, PROTO_VERIFY_NOT_DONE, 0, 0, 0,
		  "rate: none\nhash: xxh128:none\nverify: not done\n" },
		{ "running", 8192, PROTO_HASH_NONE, 2048, PROTO_VERIFY_PENDING, 0, 0, 0,
		  "rate: 8192\nhash: xxh128:none (resumed at sector 2048)\nverify: pending\n" },
		{ "done", 0, PROTO_HASH_NONE, 2048, PROTO_VERIFY_OK, 0, 0, 2048,
		  "hash: xxh128:none (resumed at sector 2048)\n"
		  "verify: ok (sectors below 2048 copied before the restart, not verified)\n" },
		{ "failed", 0, PROTO_HASH_NONE, 0, PROTO_VERIFY_MISMATCH, 0, 0, 0, "verify: mismatch\n" },
	};

	for (size_t index = 0; index < sizeof(cases) / sizeof(cases[0]); index++) {
		struct proto_status status = {
			.state = cases[index].state, .error = "none", .rate = cases[index].rate,
			.hashes = KCOPYD_HASH_XXH128, .hash_state = cases[index].hash_state,
			.hash_resumed_at = cases[index].resumed_at, .verify = cases[index].verify,
			.sectors_verified = cases[index].verified, .sectors_verify_total = cases[index].verify_total,
			.verify_from = cases[index].verify_from,
		};
		struct proto_status parsed;
		char text[4096], copy[4096];

		proto_status_render(&status, copy, sizeof(copy));
		cr_assert(strstr(copy, cases[index].lines), "case %zu: no '%s' in:\n%s", index, cases[index].lines, copy);
		render_and_parse(&status, text, sizeof(text), &parsed);
		cr_assert_str_eq(parsed.state, cases[index].state, "case %zu", index);
		cr_assert(parsed.has_rate && parsed.rate == cases[index].rate, "case %zu: rate %llu", index,
			  (unsigned long long)parsed.rate);
		cr_assert(parsed.hashes == KCOPYD_HASH_XXH128 && parsed.hash_state == cases[index].hash_state &&
				  parsed.hash_resumed_at == cases[index].resumed_at,
			  "case %zu: hash %#x state %d at %llu", index, parsed.hashes, parsed.hash_state,
			  (unsigned long long)parsed.hash_resumed_at);
		cr_assert(parsed.has_verify && parsed.verify == cases[index].verify &&
				  parsed.sectors_verified == cases[index].verified &&
				  parsed.sectors_verify_total == cases[index].verify_total &&
				  parsed.verify_from == cases[index].verify_from,
			  "case %zu: verify %d %llu/%llu from %llu", index, parsed.verify,
			  (unsigned long long)parsed.sectors_verified, (unsigned long long)parsed.sectors_verify_total,
			  (unsigned long long)parsed.verify_from);
	}
	/* paused is not final: wait goes on waiting. */
	cr_assert(!proto_is_final_state("paused"));
}

Test(proto, an_older_daemon_has_no_trust_lines_and_bad_ones_are_skipped)
{
	char old[] = "state: done\nprogress: 8/8\nread_err: 0\nwrite_err: 0x0\nerror: none\n"
		     "bytes_per_sec: 0\nelapsed: 0.001\nowner: 0:0\nrejected: none\nsectors_data: 8\n"
		     "sectors_zero: 0\nsectors_offloaded: 0\ncheckpoint: 8\n";
	char bad[] = "state: done\nprogress: 8/8\nread_err: 0\nwrite_err: 0x0\nerror: none\n"
		     "rate: 0\nhash: sha3:00\nhash: sha256:abc\nhash: md5:zz000000000000000000000000000000\n"
		     "verify: maybe\n";
	struct proto_status parsed;

	cr_assert_eq(proto_status_parse(old, &parsed), 0);
	cr_assert(!parsed.has_rate && !parsed.has_verify && parsed.hashes == 0, "an old status has none of them");
	cr_assert_eq(proto_status_parse(bad, &parsed), 0, "a bad new line does not make the status unreadable");
	cr_assert(!parsed.has_rate, "rate: 0 is not a rate");
	cr_assert_eq(parsed.hashes, 0, "no hash: line parsed, yet hashes %#x", parsed.hashes);
	cr_assert(!parsed.has_verify);
}

Test(proto, verify_errors_on_the_error_line)
{
	const char *dests[KCOPYD_MAX_REGIONS] = { "/d0", "/dev/loop 7", "nbd://h/x" };
	const char *source = "/src";
	struct kcopyd_result result = { 0 }, parsed = { 0 };
	const char *unparsed = NULL;
	char line[2048];

	result.write[0] = (struct kcopyd_failure){ .error = -EIO, .sector = 0, .count = 8 };
	result.write_err = 0x7;
	result.verified = -1;
	result.verify_err = 0x6;
	result.verify[1] = (struct kcopyd_failure){ .error = -EBADMSG, .sector = 2048, .count = 2048 };
	result.verify[2] = (struct kcopyd_failure){ .error = -EIO, .sector = 4096, .count = 2048 };
	/* Not in verify_err: not rendered. */
	result.verify[0] = (struct kcopyd_failure){ .error = -EBADMSG, .sector = 1, .count = 1 };
	cr_assert(proto_failure_render(&result, source, dests, line, sizeof(line)) > 0);
	cr_assert_str_eq(line, "write error on /d0 (to #0) sectors 0+8: EIO (Input/output error); "
			       "verify error on /dev/loop 7 (to #1) sectors 2048+2048: EBADMSG (Bad message); "
			       "verify error on nbd://h/x (to #2) sectors 4096+2048: EIO (Input/output error)");
	cr_assert(proto_failure_parse(line, source, dests, 3, &parsed, &unparsed), "'%s' did not parse at '%s'", line,
		  unparsed);
	cr_assert(parsed.write[0].error == -EIO && parsed.write[1].error == 0 && parsed.write[2].error == 0);
	cr_assert_eq(parsed.verify_err, 0x6u, "verify_err %#x", parsed.verify_err);
	cr_assert(parsed.verify[1].sector == 2048 && parsed.verify[1].count == 2048 &&
		  parsed.verify[1].error == -EBADMSG);
	cr_assert(parsed.verify[2].sector == 4096 && parsed.verify[2].error == -EIO);
	cr_assert_eq(parsed.verify[0].error, 0);
	/* Only a verify failure. */
	result = (struct kcopyd_result){ .verified = -1, .verify_err = 0x1 };
	result.verify[0] = (struct kcopyd_failure){ .error = -EBADMSG, .sector = 8, .count = 8 };
	proto_failure_render(&result, source, dests, line, sizeof(line));
	cr_assert_str_eq(line, "verify error on /d0 (to #0) sectors 8+8: EBADMSG (Bad message)");
}

/* Found by fuzz-status: a line without ": " must not take the colon of a later line. */
Test(proto, status_line_without_colon_stays_its_own)
{
	char text[] = "state: done\nprogress: 8/8\nread_err: 0\nwrite_err: 0x0\nerror\n.r: x\nerror: none\n";
	struct proto_status parsed;

	cr_assert_eq(proto_status_parse(text, &parsed), 0);
	cr_assert_str_eq(parsed.error, "none", "the error line is '%s'", parsed.error);
}

/* Found by fuzz-region: a command-line word with a control character renders and parses back. */
Test(proto, word_with_a_control_character_round_trips)
{
	static const char word[] = "nbd://[::]:10809:8+1\026";
	struct jobspec_region region, again;
	char text[128], why[WHY_SIZE];
	int len;

	cr_assert_eq(jobspec_parse_region_flags(word, strlen(word), JOBSPEC_REGION_WORD, &region, why, sizeof(why)), 0,
		     "%s", why);
	cr_assert(region.is_uri && !strcmp(region.path, word), "'%s' is_uri %d", region.path, region.is_uri);
	len = jobspec_render_region(&region, JOBSPEC_REGION_WORD, text, sizeof(text));
	cr_assert(len > 0);
	cr_assert_eq(jobspec_parse_region_flags(text, (size_t)len, JOBSPEC_REGION_WORD, &again, why, sizeof(why)), 0,
		     "'%s': %s", text, why);
	cr_assert(!strcmp(again.path, region.path) && again.is_uri && again.sector == 0, "'%s' read back as '%s'", text,
		  again.path);
	free(again.path);
	free(region.path);
}

Test(proto, digest_text)
{
	struct kcopyd_digest digest = { .size = 16 };
	char text[PROTO_DIGEST_TEXT_LEN];

	for (unsigned int byte = 0; byte < 16; byte++)
		digest.bytes[byte] = (unsigned char)(byte * 17);
	cr_assert_str_eq(proto_digest_render(KCOPYD_HASH_MD5, &digest, text, sizeof(text)),
			 "md5:00112233445566778899aabbccddeeff", "lowercase hex: got %s", text);
	digest.size = 64;
	memset(digest.bytes, 0xff, sizeof(digest.bytes));
	proto_digest_render(KCOPYD_HASH_BLAKE2B512, &digest, text, sizeof(text));
	cr_assert_eq(strlen(text), strlen("blake2b512:") + 128, "64 bytes fit PROTO_DIGEST_TEXT_LEN: got %s", text);
	proto_digest_render(KCOPYD_HASH_SHA512, &digest, text, 12);
	cr_assert_eq(strlen(text), 11, "cut to the buffer: got %s", text);
}
