/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A libFuzzer target for the region parser (PATH[:SECTOR[+COUNT]]) and the
 * number parser under it (src/kcopydfs/jobspec.c).
 *
 * Build and run: contrib/fuzz.sh [SECONDS]; seed corpus tests/fuzz/corpus/region/.
 * `make check` replays the corpus through it (tests/fuzz/replay.c).
 *
 * Asserts, besides the sanitizers' checks: documented return values only;
 * a reason that is one printable line starting with the region in double
 * quotes; an accepted region has an absolute path and a SECTOR+COUNT that
 * does not pass 2^64; an accepted number prints back in decimal as the
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
		FUZZ_CHECK(region.path && region.path[0] == '/', "an accepted region's path is not absolute");
		FUZZ_CHECK(!region.has_count || region.sector + region.count >= region.sector,
			   "SECTOR+COUNT overflows");
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
