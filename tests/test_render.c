/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Rendering of a job's status (src/kcopydfs/render.c, kfs_render_status()):
 * a pure function of a struct kfs_job_view, tested without a mount.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kcopydfs/jobs.h"

TestSuite(render, .timeout = 30);

/* The number after "KEY: " in @text, or -1 if the line is missing. */
static double field(const char *text, const char *key)
{
	char pattern[64];
	const char *line;

	snprintf(pattern, sizeof(pattern), "\n%s: ", key);
	line = strstr(text, pattern);
	return line ? strtod(line + strlen(pattern), NULL) : -1;
}

static struct kfs_job_view running_view(uint64_t done, uint64_t before_run, double elapsed)
{
	struct kfs_job_view view = { .id = 1, .uid = 0, .gid = 0, .state = KFS_RUNNING };

	strcpy(view.name, "job");
	strcpy(view.error, "none");
	view.sectors_done = done;
	view.sectors_before_run = before_run;
	view.sectors_total = 4096;
	view.elapsed = elapsed;
	return view;
}

Test(render, bytes_per_sec_counts_only_this_run)
{
	static const struct {
		uint64_t done, before_run;
		double elapsed, rate;
		const char *what;
	} cases[] = {
		{ 2048, 0, 2.0, 2048 * 512 / 2.0, "a job never resumed: all of its progress" },
		{ 3072, 2048, 2.0, 1024 * 512 / 2.0, "resumed at 2048: only the 1024 sectors of this run" },
		{ 4096, 4096, 0.5, 0, "resumed at its end: nothing copied in this run" },
		{ 2048, 2048, 0, 0, "no time has passed" },
		{ 1000, 2048, 1.0, 0, "progress below the resume point (never shown): 0, not a wrapped number" },
	};
	char text[2048];
	unsigned int index;

	for (index = 0; index < sizeof(cases) / sizeof(cases[0]); index++) {
		struct kfs_job_view view = running_view(cases[index].done, cases[index].before_run, cases[index].elapsed);
		double rate;
		int len;

		len = kfs_render_status(&view, text, sizeof(text));
		cr_assert(len > 0 && (size_t)len < sizeof(text), "case %u (%s): rendered %d bytes", index,
			  cases[index].what, len);
		rate = field(text, "bytes_per_sec");
		cr_expect(rate >= cases[index].rate - 0.5 && rate <= cases[index].rate + 0.5,
			  "case %u (%s): bytes_per_sec %.0f, expected %.0f; the text:\n%s", index, cases[index].what, rate,
			  cases[index].rate, text);
		/* progress still counts from the job's start. */
		cr_expect(field(text, "progress") == (double)cases[index].done,
			  "case %u (%s): progress %.0f, expected %llu", index, cases[index].what, field(text, "progress"),
			  (unsigned long long)cases[index].done);
	}
}

/* The keys of @text's lines, in order, separated by blanks, into @keys. */
static void line_keys(const char *text, char *keys, size_t len)
{
	size_t used = 0;

	keys[0] = '\0';
	for (const char *line = text; *line; line = strchr(line, '\n') + 1) {
		const char *colon = strchr(line, ':');

		cr_assert(colon && strchr(line, '\n') && colon < strchr(line, '\n'), "a line without a key in:\n%s",
			  text);
		used += (size_t)snprintf(keys + used, len - used, "%s%.*s", used ? " " : "", (int)(colon - line), line);
	}
}

Test(render, status_lines_in_order_the_counts_and_checkpoint_last)
{
	struct kfs_job_view view = running_view(3072, 1024, 1.0);
	char text[2048], keys[512];

	view.sectors_data = 1536;
	view.sectors_zero = 512;
	view.sectors_offloaded = 1024;
	view.checkpoint = 2560;
	kfs_render_status(&view, text, sizeof(text));
	line_keys(text, keys, sizeof(keys));
	/* The nine lines readers of old count on stay first, in their order. */
	cr_assert_str_eq(keys,
			 "state progress read_err write_err error bytes_per_sec elapsed owner rejected sectors_data "
			 "sectors_zero sectors_offloaded checkpoint rate verify",
			 "the status's keys; the text:\n%s", text);
	cr_expect(field(text, "sectors_data") == 1536, "sectors_data %.0f, expected 1536:\n%s",
		  field(text, "sectors_data"), text);
	cr_expect(field(text, "sectors_zero") == 512, "sectors_zero %.0f, expected 512:\n%s", field(text, "sectors_zero"),
		  text);
	cr_expect(field(text, "sectors_offloaded") == 1024, "sectors_offloaded %.0f, expected 1024:\n%s",
		  field(text, "sectors_offloaded"), text);
	cr_expect(field(text, "checkpoint") == 2560, "checkpoint %.0f, expected 2560:\n%s", field(text, "checkpoint"),
		  text);
	cr_expect(strstr(text, "\nsectors_data: 1536\nsectors_zero: 512\nsectors_offloaded: 1024\ncheckpoint: 2560\n") !=
			  NULL,
		  "the sparse counts and checkpoint, exactly:\n%s", text);
	cr_expect(strstr(text, "\nrate: none\nverify: none\n") != NULL, "no rate, no hash, no verify:\n%s", text);
}

Test(render, a_paused_job_with_hashes_a_rate_and_verify)
{
	struct kfs_job_view view = running_view(3072, 0, 1.0);
	char text[2048], state[32], keys[512];

	view.paused = true;
	view.rate = 16u << 20;
	view.hashes = KCOPYD_HASH_SHA256 | KCOPYD_HASH_XXH128;
	view.hash_state = PROTO_HASH_PENDING;
	view.verify = PROTO_VERIFY_PENDING;
	kfs_render_status(&view, text, sizeof(text));
	kfs_render_state(&view, state, sizeof(state));
	cr_assert_str_eq(state, "paused\n");
	cr_assert(strncmp(text, "state: paused\n", 14) == 0, "a paused running job:\n%s", text);
	line_keys(text, keys, sizeof(keys));
	cr_assert(strstr(keys, " checkpoint rate hash hash verify") != NULL, "keys '%s'", keys);
	cr_assert(strstr(text, "\nrate: 16777216\nhash: sha256:pending\nhash: xxh128:pending\nverify: pending\n"),
		  "the new lines:\n%s", text);
	/* A finished job is never shown paused. */
	view.state = KFS_CANCELLED;
	kfs_render_state(&view, state, sizeof(state));
	cr_assert_str_eq(state, "cancelled\n");
	/* Verify under way. */
	view.state = KFS_RUNNING;
	view.paused = false;
	view.verify = PROTO_VERIFY_RUNNING;
	view.sectors_verified = 100;
	view.sectors_verify_total = 8192;
	kfs_render_status(&view, text, sizeof(text));
	cr_assert(strstr(text, "state: running\n") && strstr(text, "\nverify: running 100/8192\n"), "%s", text);
}

Test(render, stats_lines_sparse_sums_last)
{
	struct kfs_stats stats = { .jobs = 1, .max_jobs = 4 };
	char text[4096], keys[1024];

	stats.engine.sectors_written = 9000;
	stats.engine.sectors_zero = 4000;
	stats.engine.sectors_offloaded = 3000;
	stats.engine.zero_fallbacks = 7;
	stats.engine.offload_fallbacks = 2;
	stats.engine.io_engine = KCOPYD_IO_ENGINE_IO_URING;
	kfs_render_stats(&stats, text, sizeof(text));
	line_keys(text, keys, sizeof(keys));
	cr_assert_str_eq(keys,
			 "jobs jobs_active jobs_total jobs_done jobs_failed jobs_cancelled jobs_max sectors_read "
			 "sectors_written read_errors write_errors pages_total pages_in_use pages_peak subjob_sectors "
			 "depth heap_in_use sectors_zero sectors_offloaded zero_fallbacks offload_fallbacks io_engine "
			 "sectors_hashed sectors_verified verify_errors jobs_paused throttled_ns rate",
			 "the stats keys; the text:\n%s", text);
	cr_expect(strstr(text, "\nsectors_written: 9000\n") && strstr(text, "\nsectors_zero: 4000\n") &&
			  strstr(text, "\nsectors_offloaded: 3000\n") && strstr(text, "\nzero_fallbacks: 7\n") &&
			  strstr(text, "\noffload_fallbacks: 2\n") && strstr(text, "\nio_engine: io_uring\n"),
		  "the engine's sums and its I/O engine, as given:\n%s", text);
	cr_expect(strstr(text, "\nrate: none\n"), "no --rate:\n%s", text);
	stats.engine.sectors_hashed = 11;
	stats.engine.sectors_verified = 12;
	stats.engine.verify_errors = 13;
	stats.engine.jobs_paused = 2;
	stats.engine.throttled_ns = 1500000000;
	stats.engine.rate = 16u << 20;
	kfs_render_stats(&stats, text, sizeof(text));
	cr_expect(strstr(text, "\nsectors_hashed: 11\nsectors_verified: 12\nverify_errors: 13\njobs_paused: 2\n"
			       "throttled_ns: 1500000000\nrate: 16777216\n"),
		  "the trust counters and the daemon's rate, last:\n%s", text);
}
