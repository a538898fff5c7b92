/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What the fuzz targets share: a check that aborts (libFuzzer reports it) and the reason check. */
#ifndef KCOPYD_FUZZ_H
#define KCOPYD_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* FUZZ_CHECK() - abort with @what on stderr unless @cond holds. */
#define FUZZ_CHECK(cond, what)                                                              \
	do {                                                                                \
		if (!(cond)) {                                                              \
			fprintf(stderr, "fuzz check failed at %s:%d: %s\n", __FILE__, __LINE__, \
				(what));                                                    \
			abort();                                                            \
		}                                                                           \
	} while (0)

/* A refusal's reason: NUL-terminated within @size, not empty, printable ASCII only. */
static inline void fuzz_check_reason(const char *why, size_t size)
{
	const char *end = memchr(why, '\0', size);
	const char *pos;

	FUZZ_CHECK(end != NULL, "the reason is not NUL-terminated");
	FUZZ_CHECK(end > why, "a refusal has an empty reason");
	for (pos = why; pos < end; pos++)
		FUZZ_CHECK((unsigned char)*pos >= 0x20 && (unsigned char)*pos < 0x7f,
			   "the reason holds a control or non-ASCII byte");
}

#endif /* KCOPYD_FUZZ_H */
