/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A fake driver for engine unit tests: it does each I/O at once on the
 * local-file driver's descriptor of the device (a memfd or a plain file):
 * pread/pwrite, zeros written as data, copies by pread and pwrite.  It can
 * fail chosen I/Os (a zero refused with -EOPNOTSUPP, say), stop them short,
 * answer extents from a list the test gives, hand completions back in
 * reverse order to shake out ordering assumptions, and it logs every I/O
 * it was given.
 */
#ifndef KCOPYD_FAKE_IO_H
#define KCOPYD_FAKE_IO_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "libkcopyd/internal.h"

#define FAKE_MAX_RULES 16
#define FAKE_LOG_SIZE 65536
#define FAKE_MAX_EXTENT_LISTS 4
#define FAKE_MAX_EXTENTS 16

/* Fail every I/O of @op on @dev that touches sectors [sector, sector + count). */
struct fake_rule {
	const struct kcopyd_dev *dev;
	enum kcopyd_io_op op;
	uint64_t sector;
	uint64_t count;
	int error;		/* negative errno */
	bool short_transfer;	/* fake_io_stop_short(): stop short at @sector, then @error */
	bool once;		/* drop the rule after its first short transfer */
	bool spent;		/* a once rule that has fired */
};

struct fake_log_entry {
	const struct kcopyd_dev *dev;
	enum kcopyd_io_op op;
	uint64_t sector;
	uint64_t count;
	unsigned int zero_flags;	/* KCOPYD_IO_ZERO */
	const struct kcopyd_dev *src;	/* KCOPYD_IO_COPY */
};

/* A data extent of a device's list (fake_io_extents()): sectors [sector, sector + count). */
struct fake_extent {
	uint64_t sector;
	uint64_t count;
};

struct fake_extent_list {
	const struct kcopyd_dev *dev;
	struct fake_extent extents[FAKE_MAX_EXTENTS];	/* ascending, not touching */
	unsigned int count;
	unsigned int queries;	/* extent() calls answered */
};

struct fake_io {
	pthread_mutex_t lock;	/* the test thread reads the log while the I/O thread writes it */
	struct fake_rule rules[FAKE_MAX_RULES];
	unsigned int rule_count;
	bool reverse;		/* reap newest first */
	unsigned int max_submit;/* take at most this many per submit (0: all) */
	struct fake_log_entry log[FAKE_LOG_SIZE];
	unsigned int log_count;
	unsigned int max_in_flight;	/* most I/Os submitted and not reaped at once */
	bool hold;		/* keep completed I/Os back until fake_io_release() */
	unsigned int held_count;
	struct fake_extent_list extent_lists[FAKE_MAX_EXTENT_LISTS];
	unsigned int extent_list_count;
	/* Set by the backend: where its completions wait. */
	struct fake_backend *backend;
};

extern const struct kcopyd_driver fake_io_ops;

void fake_io_init(struct fake_io *fake);
void fake_io_fail(struct fake_io *fake, const struct kcopyd_dev *dev, enum kcopyd_io_op op,
		  uint64_t sector, uint64_t count, int error);
/*
 * fake_io_stop_short() - @dev ends at @sector for @op, as a filesystem that
 * fills up does: an I/O that runs past @sector transfers only the part
 * below it and completes short (with that many bytes); one that starts at
 * or past it fails with @error, or goes through if @error is 0.  With
 * @once, the rule is dropped after its first short transfer.
 */
void fake_io_stop_short(struct fake_io *fake, const struct kcopyd_dev *dev, enum kcopyd_io_op op,
			uint64_t sector, int error, bool once);
/*
 * fake_io_extents() - from now on @dev holds data only in the @count
 * extents given (ascending, sectors), holes elsewhere: what extent()
 * answers, as SEEK_DATA would.  The content is the test's to match (a
 * memfd's holes read as zeros).  Devices without a list are all data.
 */
void fake_io_extents(struct fake_io *fake, const struct kcopyd_dev *dev, const struct fake_extent *extents,
		     unsigned int count);
/* How many extent() calls were answered for @dev. */
unsigned int fake_io_extent_queries(struct fake_io *fake, const struct kcopyd_dev *dev);
/* Let held I/Os complete and stop holding; returns how many were held. */
unsigned int fake_io_release(struct fake_io *fake);
/* How many I/Os are held now. */
unsigned int fake_io_held(struct fake_io *fake);
/* Copy the log out under the lock; returns the number of entries. */
unsigned int fake_io_log(struct fake_io *fake, struct fake_log_entry *out, unsigned int max);

#endif
