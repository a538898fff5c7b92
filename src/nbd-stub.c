/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * TEMPORARY, branch grammar only: the NBD functions of kcopyd.h that the
 * front ends call, until branch nbd brings the real ones (drv_nbd.c).
 * kcopyd_is_nbd_uri() is the real rule (the grammar needs it); opening an
 * export says that NBD is not built in.  Delete this file and its line in
 * Makefile.am when merging nbd: the two definitions cannot link together.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "kcopyd.h"

int kcopyd_is_nbd_uri(const char *name)
{
	static const char *const schemes[] = {
		"nbd://", "nbds://", "nbd+unix://", "nbds+unix://", "nbd+vsock://", "nbds+vsock://",
	};

	if (!name)
		return 0;
	for (size_t index = 0; index < sizeof(schemes) / sizeof(schemes[0]); index++)
		if (strncasecmp(name, schemes[index], strlen(schemes[index])) == 0)
			return 1;
	return 0;
}

int kcopyd_dev_open_nbd(const char *uri, int flags, const struct kcopyd_nbd_config *config, size_t config_size,
			struct kcopyd_dev **result, char *why, size_t why_len)
{
	(void)uri, (void)flags, (void)config, (void)config_size, (void)result;
	if (why && why_len)
		snprintf(why, why_len, "NBD is not built in (branch grammar's stub)");
	return -EPROTONOSUPPORT;
}

const char *kcopyd_dev_error(const struct kcopyd_dev *dev)
{
	(void)dev;
	return NULL;
}

int kcopyd_nbd_uri_parse(const char *uri, struct kcopyd_nbd_uri *result, char *why, size_t why_len)
{
	(void)uri, (void)result;
	if (why && why_len)
		snprintf(why, why_len, "NBD is not built in (stub)");
	return -EPROTONOSUPPORT;
}

void kcopyd_nbd_uri_free(struct kcopyd_nbd_uri *uri)
{
	(void)uri;
}
