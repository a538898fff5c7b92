/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A libFuzzer target for the region parser ((PATH|URI)[:SECTOR[+COUNT]]),
 * as ctl and as kcopy's command line take it, and the number parser under
 * it (src/proto/jobspec.c).
 *
 * Build and run: contrib/fuzz.sh [SECONDS]; seed corpus tests/fuzz/corpus/region/.
 * `make check` replays the corpus through it (tests/fuzz/replay.c).
 *
 * Asserts, besides the sanitizers' checks: documented return values only;
 * a reason that is one printable line starting with the region in double
 * quotes; an accepted region has an absolute path or is a URI, and a
 * SECTOR+COUNT that does not pass 2^64; an accepted region, rendered
 * (jobspec_render_region(), as a description and as a command-line word),
 * parses back to itself; an accepted number prints back in decimal as the
 * same number of sectors.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/jobspec.h"
#include "fuzz.h"

/* @region, rendered with @flags, parses back with @flags to the same region. */
static void check_region_round_trip(const struct jobspec_region *region, unsigned int flags)
{
	struct jobspec_region again;
	char *text;
	size_t size = strlen(region->path) * 2 + 64;
	int len;

	text = malloc(size);
	FUZZ_CHECK(text != NULL, "out of memory");
	len = jobspec_render_region(region, flags, text, size);
	FUZZ_CHECK(len > 0, "an accepted region does not render");
	FUZZ_CHECK(jobspec_parse_region_flags(text, (size_t)len, flags, &again, NULL, 0) == 0,
		   "a rendered region does not parse back");
	FUZZ_CHECK(strcmp(again.path, region->path) == 0 && again.is_uri == region->is_uri &&
			   again.sector == region->sector && again.has_count == region->has_count &&
			   (!region->has_count || again.count == region->count),
		   "a rendered region parses back to another one");
	free(again.path);
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct jobspec_region region;
	char why[512], decimal[32];
	uint64_t sectors, again;
	int r;

	memset(why, 0x55, sizeof(why));
	r = jobspec_parse_region((const char *)data, size, &region, why, sizeof(why));
	if (r < 0) {
		FUZZ_CHECK(r == -EINVAL || r == -ERANGE || r == -ENOMEM,
			   "jobspec_parse_region returned an undocumented error");
		fuzz_check_reason(why, sizeof(why));
		FUZZ_CHECK(why[0] == '"', "the reason does not start with the region in quotes");
	} else {
		FUZZ_CHECK(r == 0, "jobspec_parse_region returned a positive value");
		FUZZ_CHECK(region.path && (region.path[0] == '/' || region.is_uri),
			   "an accepted region's path is neither absolute nor a URI");
		FUZZ_CHECK(!region.has_count || region.sector + region.count >= region.sector,
			   "SECTOR+COUNT overflows");
		check_region_round_trip(&region, 0);
		free(region.path);
	}

	/* The same bytes as a kcopy argument (a word the shell split: relative paths, blanks taken). */
	memset(why, 0x55, sizeof(why));
	r = jobspec_parse_region_flags((const char *)data, size, JOBSPEC_REGION_WORD, &region, why, sizeof(why));
	if (r < 0) {
		FUZZ_CHECK(r == -EINVAL || r == -ERANGE || r == -ENOMEM,
			   "jobspec_parse_region_flags returned an undocumented error");
		fuzz_check_reason(why, sizeof(why));
	} else {
		FUZZ_CHECK(r == 0 && region.path && region.path[0], "an accepted word has no path");
		check_region_round_trip(&region, JOBSPEC_REGION_WORD);
		free(region.path);
	}

	r = jobspec_parse_number((const char *)data, size, &sectors);
	FUZZ_CHECK(r == 0 || r == -EINVAL || r == -ERANGE, "jobspec_parse_number returned an undocumented error");
	if (r == 0) {
		int len = snprintf(decimal, sizeof(decimal), "%" PRIu64, sectors);

		r = jobspec_parse_number(decimal, (size_t)len, &again);
		FUZZ_CHECK(r == 0 && again == sectors, "a number does not read back in decimal");
	}
	return 0;
}
