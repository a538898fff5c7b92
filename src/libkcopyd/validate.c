/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The checks every job passes before it is queued, with a reason a person
 * can read (the FUSE front end shows it on a job's error line). */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "libkcopyd/internal.h"

#define KCOPYD_KNOWN_FLAGS \
	(KCOPYD_IGNORE_ERROR | KCOPYD_WRITE_SEQ | KCOPYD_DEST_ZERO | KCOPYD_ALLOCATED | KCOPYD_NO_OFFLOAD | \
	 KCOPYD_VERIFY)

int internal_refuse(int err, char *why, size_t why_len, const char *fmt, ...)
{
	va_list ap;

	if (why && why_len) {
		va_start(ap, fmt);
		vsnprintf(why, why_len, fmt, ap);
		va_end(ap);
	}
	return err;
}

static void region_name(char *buf, size_t len, int dest_index)
{
	if (dest_index < 0)
		snprintf(buf, len, "source");
	else
		snprintf(buf, len, "destination %d", dest_index);
}

/* One region on its own: a device, inside it, aligned to its block size. */
static int check_region(const struct io_region *region, int dest_index, bool verify, char *why,
			unsigned int why_len)
{
	const struct kcopyd_dev *dev = region->bdev;
	uint64_t sectors_per_block;
	char name[32];

	region_name(name, sizeof(name), dest_index);
	if (!dev)
		return internal_refuse(-EINVAL, why, why_len, "%s has no device", name);
	if (region->sector > dev->sectors || region->count > dev->sectors - region->sector)
		return internal_refuse(-ERANGE, why, why_len,
			      "%s sectors %llu+%llu run past the end of its device (%llu sectors)", name,
			      (unsigned long long)region->sector, (unsigned long long)region->count,
			      (unsigned long long)dev->sectors);
	sectors_per_block = dev->block_size >> KCOPYD_SECTOR_SHIFT;
	if (region->sector % sectors_per_block || region->count % sectors_per_block)
		return internal_refuse(-EINVAL, why, why_len,
			      "%s sectors %llu+%llu are not aligned to its block size of %u bytes", name,
			      (unsigned long long)region->sector, (unsigned long long)region->count,
			      dev->block_size);
	if (dest_index < 0 && !dev->readable)
		return internal_refuse(-EBADF, why, why_len, "source device is not open for reading");
	if (dest_index >= 0 && !dev->writable)
		return internal_refuse(-EBADF, why, why_len, "%s device is not open for writing", name);
	if (dest_index >= 0 && verify && !dev->readable)
		return internal_refuse(-EBADF, why, why_len, "%s device is not open for reading, which verify needs",
				       name);
	return 0;
}

/* The same file or block device, opened twice or not. */
static bool same_device(const struct kcopyd_dev *a, const struct kcopyd_dev *b)
{
	if (a->identity_name || b->identity_name)
		return a->identity_name && b->identity_name && strcmp(a->identity_name, b->identity_name) == 0;
	return a->is_blockdev == b->is_blockdev && a->identity_dev == b->identity_dev &&
	       a->identity_ino == b->identity_ino;
}

/* The same storage underneath: a loop device and its file, two loops on one file, a partition and its disk. */
static bool same_storage(const struct kcopyd_dev *a, const struct kcopyd_dev *b)
{
	if (a->identity_name || b->identity_name)
		return same_device(a, b);
	return a->storage_is_file == b->storage_is_file && a->storage_dev == b->storage_dev &&
	       a->storage_ino == b->storage_ino;
}

int kcopyd_regions_overlap(const struct io_region *a, const struct io_region *b)
{
	uint64_t a_start, b_start;

	if (!a || !b || !a->bdev || !b->bdev || !a->count || !b->count || !same_storage(a->bdev, b->bdev))
		return 0;
	/* In bytes of the storage: a loop device's offset need not be whole sectors. */
	a_start = a->bdev->storage_offset + (a->sector << KCOPYD_SECTOR_SHIFT);
	b_start = b->bdev->storage_offset + (b->sector << KCOPYD_SECTOR_SHIFT);
	return a_start < b_start + (b->count << KCOPYD_SECTOR_SHIFT) &&
	       b_start < a_start + (a->count << KCOPYD_SECTOR_SHIFT);
}

/* " (...)" when @a and @b overlap through an alias rather than on one device or file. */
static const char *alias_note(const struct io_region *a, const struct io_region *b)
{
	return same_device(a->bdev, b->bdev) ? (a->bdev->identity_name && a->bdev != b->bdev ? " (the same NBD export)" : "")
		: " (the same storage, through a loop device or partition)";
}

int kcopyd_validate(const struct io_region *from, unsigned int num_dests,
		    const struct io_region *dests, unsigned int flags, char *why, unsigned int why_len)
{
	unsigned int dest_index, other;
	int r;

	if (why && why_len)
		why[0] = '\0';
	if (num_dests == 0 || !dests)
		return internal_refuse(-EINVAL, why, why_len, "no destination");
	if (num_dests > KCOPYD_MAX_REGIONS)
		return internal_refuse(-EINVAL, why, why_len, "%u destinations, at most %u are allowed", num_dests,
			      KCOPYD_MAX_REGIONS);
	if (flags & ~KCOPYD_KNOWN_FLAGS)
		return internal_refuse(-EINVAL, why, why_len, "unknown flags 0x%x", flags & ~KCOPYD_KNOWN_FLAGS);
	if (!from && (flags & KCOPYD_VERIFY))
		return internal_refuse(-EINVAL, why, why_len, "verify is for copies: a zero job has no source to compare with");
	if (from) {
		r = check_region(from, -1, false, why, why_len);
		if (r < 0)
			return r;
	}
	for (dest_index = 0; dest_index < num_dests; dest_index++) {
		const struct io_region *dest = &dests[dest_index];
		uint64_t expected = from ? from->count : dests[0].count;

		if (dest->count != expected)
			return internal_refuse(-EINVAL, why, why_len,
				      "destination %u has %llu sectors, the %s has %llu", dest_index,
				      (unsigned long long)dest->count, from ? "source" : "first destination",
				      (unsigned long long)expected);
		r = check_region(dest, (int)dest_index, flags & KCOPYD_VERIFY, why, why_len);
		if (r < 0)
			return r;
		if (from && kcopyd_regions_overlap(from, dest))
			return internal_refuse(-EINVAL, why, why_len, "destination %u overlaps the source%s", dest_index,
				      alias_note(from, dest));
		for (other = 0; other < dest_index; other++)
			if (kcopyd_regions_overlap(&dests[other], dest))
				return internal_refuse(-EINVAL, why, why_len, "destination %u overlaps destination %u%s",
					      dest_index, other, alias_note(&dests[other], dest));
	}
	return 0;
}
