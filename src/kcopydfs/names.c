/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The rule for a job's name (names.h), for the table and for the records
 * that bring a job back.  No state, no lock.
 */
#include "config.h"

#include <string.h>

#include "kcopydfs/names.h"

int kfs_name_valid(const char *name)
{
	size_t len = strlen(name), index;

	if (len == 0 || len > KFS_NAME_MAX || name[0] == '.')
		return 0;
	for (index = 0; index < len; index++) {
		char c = name[index];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
		      c == '_' || c == '-'))
			return 0;
	}
	return 1;
}
