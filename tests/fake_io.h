/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A fake I/O backend for engine unit tests: it does each I/O at once with
 * pread/pwrite on the device's descriptor (a memfd or a plain file), can
 * fail chosen I/Os, hands completions back in reverse order to shake out
 * ordering assumptions, and logs every I/O it was given.
 */
#ifndef KCOPYD_FAKE_IO_H
#define KCOPYD_FAKE_IO_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "libkcopyd/internal.h"

#define FAKE_MAX_RULES 16
#define FAKE_LOG_SIZE 65536

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
	/* Set by the backend: where its completions wait. */
	struct fake_backend *backend;
};

extern const struct kcopyd_io_ops fake_io_ops;

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
/* Let held I/Os complete and stop holding; returns how many were held. */
unsigned int fake_io_release(struct fake_io *fake);
/* How many I/Os are held now. */
unsigned int fake_io_held(struct fake_io *fake);
/* Copy the log out under the lock; returns the number of entries. */
unsigned int fake_io_log(struct fake_io *fake, struct fake_log_entry *out, unsigned int max);

#endif
