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
