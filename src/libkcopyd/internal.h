/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Internal interfaces of libkcopyd, shared by the engine and its tests. */
#ifndef KCOPYD_INTERNAL_H
#define KCOPYD_INTERNAL_H

#include <stdbool.h>
#include <sys/types.h>

#include "kcopyd.h"
#include "libkcopyd/io.h"

struct kcopyd_dev {
	int fd;
	bool direct;		/* opened with O_DIRECT */
	bool writable;		/* opened O_RDWR or O_WRONLY */
	bool readable;
	bool is_blockdev;
	dev_t identity_dev;	/* st_rdev of a block device, st_dev of a file */
	ino_t identity_ino;	/* 0 for a block device */
	/*
	 * Where the device's bytes really live, resolved once at open through
	 * partitions and loop devices (see resolve_storage() in dev.c): byte
	 * B of the device is byte storage_offset + B of the regular file
	 * (storage_dev, storage_ino) if storage_is_file, else of the block
	 * device storage_dev.  A plain file or disk is its own storage at 0.
	 */
	bool storage_is_file;
	dev_t storage_dev;
	ino_t storage_ino;	/* 0 for a block device */
	uint64_t storage_offset;	/* bytes */
	unsigned int block_size;/* alignment of offsets and lengths, bytes */
	uint64_t sectors;
	void *backend_data;	/* for backends that need per-device state */
};

/*
 * kcopyd_client_create_ops() - create a client on a given backend.
 * @ops and @ops_arg choose the backend (kcopyd_aio_ops and NULL for the
 * real one); the tests pass their fake.
 */
int kcopyd_client_create_ops(const struct kcopyd_config *config,
			     const struct kcopyd_io_ops *ops, void *ops_arg,
			     struct kcopyd_client **result);

/* dio_align() - statx STATX_DIOALIGN: 0 and the offset alignment (0 if the
 * file does not support direct I/O), or -errno if the kernel cannot say. */
int kcopyd_dio_offset_align(int fd, unsigned int *offset_align);

#endif /* KCOPYD_INTERNAL_H */
