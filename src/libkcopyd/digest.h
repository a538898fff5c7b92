/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Digests (digest.c): the algorithms of enum kcopyd_hash over OpenSSL's
 * libcrypto and libxxhash, and the chunk digests of verification.  No
 * engine state: the engine's digest thread calls these.
 */
#ifndef KCOPYD_DIGEST_H
#define KCOPYD_DIGEST_H

#include <stddef.h>
#include <stdint.h>

#include "kcopyd.h"

/* A job's running digests: one context per algorithm asked for. */
struct digest_set {
	unsigned int hashes;
	void *ctx[KCOPYD_HASH_COUNT];	/* EVP_MD_CTX *, or XXH3_state_t * for XXH128 */
};

/* digest_set_init() - start the digests of @hashes.  Return: 0; -ENOMEM; -EOPNOTSUPP if libcrypto lacks one. */
int digest_set_init(struct digest_set *set, unsigned int hashes);

/* digest_set_update() - add @len bytes to every digest of @set. */
void digest_set_update(struct digest_set *set, const void *buf, size_t len);

/* digest_set_final() - the digests into @out[i] for each bit i of @set, and free @set. */
void digest_set_final(struct digest_set *set, struct kcopyd_digest out[KCOPYD_HASH_COUNT]);

/* digest_set_free() - free @set without a result (also after a failed init); idempotent. */
void digest_set_free(struct digest_set *set);

/* digest_chunk() - the XXH3-64 of @len bytes: what verification compares per chunk. */
uint64_t digest_chunk(const void *buf, size_t len);

/*
 * A chunk's XXH3-64 fed in parts (data from the buffer, zeros for holes):
 * the same value as digest_chunk() of the whole.  One state serves chunk
 * after chunk: reset, add, end.  new() returns NULL when out of memory.
 */
void *digest_chunk_state_new(void);
void digest_chunk_state_free(void *state);
void digest_chunk_reset(void *state);
void digest_chunk_add(void *state, const void *buf, size_t len);
uint64_t digest_chunk_end(void *state);

#endif /* KCOPYD_DIGEST_H */
