/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A libFuzzer target for the job-description parser (src/proto/jobspec.c),
 * the text every writer of a ctl file reaches.
 *
 * Build and run: contrib/fuzz.sh [SECONDS] (clang, -fsanitize=fuzzer,address,undefined);
 * the seed corpus is tests/fuzz/corpus/jobspec/.  The same target is built
 * with a plain main() (tests/fuzz/replay.c) so that `make check` replays
 * the corpus through it.
 *
 * Besides the sanitizers' checks, it asserts what jobspec.h promises:
 *  - the return value is 0 or one of the documented -errno values;
 *  - a refusal comes with a reason that is one non-empty line of printable text;
 *  - an accepted description has 1 to 32 destinations, absolute paths or URIs and
 *    known flags, renders to one line, and that line parses to the same
 *    description and renders to the same line again (canonical form);
 *  - a line over JOBSPEC_MAX_LINE bytes is accepted only when it is its own
 *    canonical form;
 *  - what the daemon renders, every count filled in (at its longest, 20
 *    digits), parses back to the same description too.
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/jobspec.h"
#include "fuzz.h"

static void check_region(const struct jobspec_region *region)
{
	FUZZ_CHECK(region->path && (region->path[0] == '/' || region->is_uri), "a path is neither absolute nor a URI");
	FUZZ_CHECK(!region->has_count || region->sector + region->count >= region->sector,
		   "SECTOR+COUNT overflows");
}

static bool same_region(const struct jobspec_region *a, const struct jobspec_region *b)
{
	return strcmp(a->path, b->path) == 0 && a->is_uri == b->is_uri && a->sector == b->sector &&
	       a->has_count == b->has_count &&
	       (!a->has_count || a->count == b->count);
}

static bool same_spec(const struct jobspec *a, const struct jobspec *b)
{
	unsigned int dest_index;

	if (a->op != b->op || a->num_dests != b->num_dests || a->flags != b->flags)
		return false;
	if (a->op == JOBSPEC_COPY && !same_region(&a->from, &b->from))
		return false;
	for (dest_index = 0; dest_index < a->num_dests; dest_index++)
		if (!same_region(&a->dests[dest_index], &b->dests[dest_index]))
			return false;
	return true;
}

/*
 * Render @spec, parse the text again and check it is the same description
 * that renders to the same text; @what names the rendering in a failure.
 */
static void check_round_trip(const struct jobspec *spec, const char *what)
{
	static char rendered[JOBSPEC_MAX_CANONICAL], rendered_again[JOBSPEC_MAX_CANONICAL];
	struct jobspec again;
	char why[512];
	int r, len, len_again;

	len = jobspec_render(spec, rendered, sizeof(rendered));
	FUZZ_CHECK(len > 0 && (size_t)len < sizeof(rendered), what);
	FUZZ_CHECK(rendered[len - 1] == '\n' && memchr(rendered, '\n', (size_t)len) == rendered + len - 1,
		   "the canonical form is not one line");
	r = jobspec_parse(rendered, (size_t)len, &again, why, sizeof(why));
	FUZZ_CHECK(r == 0, what);
	FUZZ_CHECK(same_spec(spec, &again), "the canonical form parses to another description");
	len_again = jobspec_render(&again, rendered_again, sizeof(rendered_again));
	FUZZ_CHECK(len_again == len && memcmp(rendered, rendered_again, (size_t)len) == 0,
		   "the canonical form is not stable");
	jobspec_free(&again);
}

static bool has_every_count(const struct jobspec *spec)
{
	unsigned int dest_index;

	if (spec->op == JOBSPEC_COPY && !spec->from.has_count)
		return false;
	for (dest_index = 0; dest_index < spec->num_dests; dest_index++)
		if (!spec->dests[dest_index].has_count)
			return false;
	return true;
}

/* What the daemon does once the regions are open: every count filled in, here at its longest. */
static void fill_counts(struct jobspec *spec)
{
	unsigned int dest_index;

	if (spec->op == JOBSPEC_COPY && !spec->from.has_count) {
		spec->from.count = UINT64_MAX - spec->from.sector;
		spec->from.has_count = true;
	}
	for (dest_index = 0; dest_index < spec->num_dests; dest_index++) {
		if (!spec->dests[dest_index].has_count) {
			spec->dests[dest_index].count = UINT64_MAX - spec->dests[dest_index].sector;
			spec->dests[dest_index].has_count = true;
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char rendered[JOBSPEC_MAX_CANONICAL];
	struct jobspec spec;
	char why[512];
	unsigned int dest_index;
	int r, len;

	memset(why, 0x55, sizeof(why));
	r = jobspec_parse((const char *)data, size, &spec, why, sizeof(why));
	if (r < 0) {
		FUZZ_CHECK(r == -EINVAL || r == -E2BIG || r == -ERANGE || r == -ENOMEM,
			   "jobspec_parse returned an undocumented error");
		fuzz_check_reason(why, sizeof(why));
		return 0;
	}
	FUZZ_CHECK(r == 0, "jobspec_parse returned a positive value");
	FUZZ_CHECK(size <= JOBSPEC_MAX_CANONICAL_LINE + 1, "a line over JOBSPEC_MAX_CANONICAL_LINE bytes was accepted");
	FUZZ_CHECK(spec.op == JOBSPEC_COPY || spec.op == JOBSPEC_ZERO, "unknown operation");
	FUZZ_CHECK(spec.num_dests >= 1 && spec.num_dests <= KCOPYD_MAX_REGIONS, "destination count out of range");
	FUZZ_CHECK((spec.flags & ~JOBSPEC_FLAGS) == 0, "unknown flag bits");
	if (spec.op == JOBSPEC_COPY)
		check_region(&spec.from);
	for (dest_index = 0; dest_index < spec.num_dests; dest_index++)
		check_region(&spec.dests[dest_index]);

	if (size > JOBSPEC_MAX_LINE + 1 || (size == JOBSPEC_MAX_LINE + 1 && data[size - 1] != '\n')) {
		size_t line_len = data[size - 1] == '\n' ? size - 1 : size;

		len = jobspec_render(&spec, rendered, sizeof(rendered));
		FUZZ_CHECK(len == (int)line_len + 1 && memcmp(rendered, data, line_len) == 0,
			   "a line over JOBSPEC_MAX_LINE bytes that is not canonical was accepted");
		FUZZ_CHECK(spec.op == JOBSPEC_ZERO || spec.from.has_count,
			   "a line over JOBSPEC_MAX_LINE bytes without a count was accepted");
		for (dest_index = 0; dest_index < spec.num_dests; dest_index++)
			FUZZ_CHECK(spec.dests[dest_index].has_count,
				   "a line over JOBSPEC_MAX_LINE bytes without a count was accepted");
	}
	/*
	 * Over JOBSPEC_MAX_LINE only a canonical description with every count
	 * is taken back, which is what the daemon renders (it fills the counts
	 * in first: the second check).  A count-less one, as written, must
	 * round-trip when its rendering fits the limit.
	 */
	len = jobspec_render(&spec, rendered, sizeof(rendered));
	if (has_every_count(&spec) || (len > 0 && len <= JOBSPEC_MAX_LINE + 1))
		check_round_trip(&spec, "an accepted description does not render, or its canonical form does not parse");
	fill_counts(&spec);
	check_round_trip(&spec, "with every count filled in, the canonical form does not render or parse");
	jobspec_free(&spec);
	return 0;
}
