/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The digests of enum kcopyd_hash: MD5, SHA-1, SHA-2 and BLAKE2b through
 * OpenSSL's EVP interface, XXH3 through libxxhash.  Nothing here is
 * written by hand; this file only names the algorithms and keeps their
 * contexts.
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <xxhash.h>

#include "libkcopyd/digest.h"

struct hash_info {
	const char *name;	/* canonical, as kcopydfs and kcopy print it */
	const char *alias[2];
	unsigned int size;
	const EVP_MD *(*md)(void);	/* NULL: XXH3-128 */
};

static const struct hash_info hash_infos[KCOPYD_HASH_COUNT] = {
	{ "md5", { NULL, NULL }, 16, EVP_md5 },
	{ "sha1", { NULL, NULL }, 20, EVP_sha1 },
	{ "sha256", { NULL, NULL }, 32, EVP_sha256 },
	{ "sha512", { NULL, NULL }, 64, EVP_sha512 },
	{ "blake2b512", { "blake2b", "b2" }, 64, EVP_blake2b512 },
	{ "xxh128", { "xxh3-128", NULL }, 16, NULL },
};

static int hash_index(unsigned int hash)
{
	int index;

	if (hash == 0 || (hash & (hash - 1)) || hash > (1u << (KCOPYD_HASH_COUNT - 1)))
		return -1;
	for (index = 0; !(hash >> index & 1); index++)
		;
	return index;
}

int kcopyd_hash_parse(const char *name, unsigned int *hash)
{
	unsigned int index, alias;

	if (!name || !hash)
		return -EINVAL;
	for (index = 0; index < KCOPYD_HASH_COUNT; index++) {
		const struct hash_info *info = &hash_infos[index];
		bool match = strcasecmp(name, info->name) == 0;

		for (alias = 0; alias < 2 && !match; alias++)
			match = info->alias[alias] && strcasecmp(name, info->alias[alias]) == 0;
		if (match) {
			*hash = 1u << index;
			return 0;
		}
	}
	return -EINVAL;
}

const char *kcopyd_hash_name(unsigned int hash)
{
	int index = hash_index(hash);

	return index < 0 ? NULL : hash_infos[index].name;
}

unsigned int kcopyd_hash_size(unsigned int hash)
{
	int index = hash_index(hash);

	return index < 0 ? 0 : hash_infos[index].size;
}

int digest_set_init(struct digest_set *set, unsigned int hashes)
{
	unsigned int index;

	memset(set, 0, sizeof(*set));
	set->hashes = hashes & KCOPYD_HASH_ALL;
	for (index = 0; index < KCOPYD_HASH_COUNT; index++) {
		const struct hash_info *info = &hash_infos[index];

		if (!(set->hashes >> index & 1))
			continue;
		if (!info->md) {
			XXH3_state_t *state = XXH3_createState();

			if (!state || XXH3_128bits_reset(state) != XXH_OK) {
				XXH3_freeState(state);
				digest_set_free(set);
				return -ENOMEM;
			}
			set->ctx[index] = state;
		} else {
			EVP_MD_CTX *ctx = EVP_MD_CTX_new();

			if (!ctx) {
				digest_set_free(set);
				return -ENOMEM;
			}
			set->ctx[index] = ctx;
			/* A FIPS-only libcrypto refuses MD5 here. */
			if (EVP_DigestInit_ex(ctx, info->md(), NULL) != 1) {
				digest_set_free(set);
				return -EOPNOTSUPP;
			}
		}
	}
	return 0;
}

void digest_set_update(struct digest_set *set, const void *buf, size_t len)
{
	unsigned int index;

	for (index = 0; index < KCOPYD_HASH_COUNT; index++) {
		if (!set->ctx[index])
			continue;
		if (hash_infos[index].md)
			EVP_DigestUpdate(set->ctx[index], buf, len);
		else
			XXH3_128bits_update(set->ctx[index], buf, len);
	}
}

void digest_set_final(struct digest_set *set, struct kcopyd_digest out[KCOPYD_HASH_COUNT])
{
	unsigned int index;

	for (index = 0; index < KCOPYD_HASH_COUNT; index++) {
		struct kcopyd_digest *digest = &out[index];

		memset(digest, 0, sizeof(*digest));
		if (!set->ctx[index])
			continue;
		if (hash_infos[index].md) {
			unsigned int size = 0;

			EVP_DigestFinal_ex(set->ctx[index], digest->bytes, &size);
			digest->size = size;
		} else {
			XXH128_canonical_t canonical;

			/* Big-endian, as xxhsum -H2 prints it. */
			XXH128_canonicalFromHash(&canonical, XXH3_128bits_digest(set->ctx[index]));
			memcpy(digest->bytes, canonical.digest, sizeof(canonical.digest));
			digest->size = sizeof(canonical.digest);
		}
	}
	digest_set_free(set);
}

void digest_set_free(struct digest_set *set)
{
	unsigned int index;

	for (index = 0; index < KCOPYD_HASH_COUNT; index++) {
		if (!set->ctx[index])
			continue;
		if (hash_infos[index].md)
			EVP_MD_CTX_free(set->ctx[index]);
		else
			XXH3_freeState(set->ctx[index]);
		set->ctx[index] = NULL;
	}
}

uint64_t digest_chunk(const void *buf, size_t len)
{
	return XXH3_64bits(buf, len);
}

void *digest_chunk_state_new(void)
{
	return XXH3_createState();
}

void digest_chunk_state_free(void *state)
{
	XXH3_freeState(state);
}

void digest_chunk_reset(void *state)
{
	XXH3_64bits_reset(state);
}

void digest_chunk_add(void *state, const void *buf, size_t len)
{
	XXH3_64bits_update(state, buf, len);
}

uint64_t digest_chunk_end(void *state)
{
	return XXH3_64bits_digest(state);
}
