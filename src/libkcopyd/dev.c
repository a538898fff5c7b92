/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Devices: what every driver's devices answer (kcopyd_dev_open() and
 * kcopyd_dev_from_fd() are the local-file driver's, in drv_file.c). */
#include "config.h"

#include <stdlib.h>

#include "libkcopyd/internal.h"

void kcopyd_dev_close(struct kcopyd_dev *dev)
{
	if (!dev)
		return;
	dev->driver->close(dev);
	free(dev);
}

uint64_t kcopyd_dev_sectors(const struct kcopyd_dev *dev)
{
	return dev->sectors;
}

unsigned int kcopyd_dev_block_size(const struct kcopyd_dev *dev)
{
	return dev->block_size;
}

int kcopyd_dev_is_direct(const struct kcopyd_dev *dev)
{
	return dev->direct;
}

const char *kcopyd_dev_error(const struct kcopyd_dev *dev)
{
	return dev && dev->driver->error ? dev->driver->error(dev) : NULL;
}

int kcopyd_dev_sync(struct kcopyd_dev *dev)
{
	return dev->driver->flush(dev);
}
