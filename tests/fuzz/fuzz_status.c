/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A libFuzzer target for the status text parser and the error-line parser
 * (src/proto/status.c), which kcopy --via runs on what a daemon wrote.
 *
 * Build and run: contrib/fuzz.sh [SECONDS] status; seed corpus tests/fuzz/corpus/status/.
 * `make check` replays the corpus through it (tests/fuzz/replay.c).
 *
 * Asserts, besides the sanitizers' checks: documented return values only;
 * a parsed status's strings lie inside the text; a parsed status renders
 * and parses back to the same numbers; an error line parses or names the
 * entry it stopped at, inside the line.
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/status.h"
#include "fuzz.h"

static bool inside(const char *pointer, const char *text, size_t size)
{
	return pointer >= text && pointer <= text + size;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const dests[KCOPYD_MAX_REGIONS] = { "/d0", "nbd://h/x", "nbd+unix:///e?socket=/s" };
	struct proto_status status, again;
	struct kcopyd_result result;
	const char *unparsed = NULL;
	char *text = malloc(size + 1), *rendered;
	int r, len;

	FUZZ_CHECK(text != NULL, "out of memory");
	memcpy(text, data, size);
	text[size] = '\0';
	r = proto_status_parse(text, &status);
	FUZZ_CHECK(r == 0 || r == -EPROTO, "proto_status_parse returned an undocumented error");
	if (r == 0) {
		FUZZ_CHECK(inside(status.state, text, size) && inside(status.error, text, size),
			   "a parsed string points outside the text");
		len = proto_status_render(&status, NULL, 0);
		FUZZ_CHECK(len > 0, "a parsed status does not render");
		rendered = malloc((size_t)len + 1);
		FUZZ_CHECK(rendered != NULL, "out of memory");
		proto_status_render(&status, rendered, (size_t)len + 1);
		/* A state or error line with a newline cannot come out of the parser (it splits lines). */
		FUZZ_CHECK(proto_status_parse(rendered, &again) == 0, "a rendered status does not parse");
		FUZZ_CHECK(again.sectors_done == status.sectors_done && again.sectors_total == status.sectors_total &&
				   again.read_err == status.read_err && again.write_err == status.write_err,
			   "a rendered status parses back to other numbers");
		free(rendered);
	}

	memcpy(text, data, size);
	text[size] = '\0';
	memset(&result, 0, sizeof(result));
	if (!proto_failure_parse(text, "nbd://h:10809/src", dests, 3, &result, &unparsed))
		FUZZ_CHECK(unparsed && inside(unparsed, text, strlen(text)), "no place where the error line stopped");
	free(text);
	return 0;
}
