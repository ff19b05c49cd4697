/* Encryption of stored secrets, hashes and random identifiers (OpenSSL 3). */
#ifndef AIPROV_CRYPTO_H
#define AIPROV_CRYPTO_H

#include "aiprov.h"

#define AIPROV_AES_KEY_LEN 32
#define AIPROV_GCM_NONCE_LEN 12
#define AIPROV_GCM_TAG_LEN 16

typedef struct {
    int count;
    unsigned char (*keys)[AIPROV_AES_KEY_LEN];  /* keys[0] encrypts */
} aiprov_keyring_t;

/*
 * Read key files at configuration time, while httpd is still root. Each
 * holds the base64 of 32 bytes. Returns NULL or a message without key
 * material. The keys live in p (the configuration pool) and are wiped when
 * it is destroyed.
 */
const char *aiprov_keyring_load(apr_pool_t *p, apr_pool_t *ptemp, int nfiles,
                                char *const files[], aiprov_keyring_t **ring);

/*
 * AES-256-GCM with a fresh random nonce; out is base64(nonce || ct || tag),
 * the format of the original Web Crypto implementation.
 */
apr_status_t aiprov_encrypt(apr_pool_t *p, const aiprov_keyring_t *ring,
                            const char *plain, apr_size_t len, const char **out);

/*
 * Tries every key of the ring (the tag tells which one fits). The plaintext
 * is NUL-terminated in p and wiped when p is cleared: callers wipe it as soon
 * as they are done with aiprov_wipe().
 */
apr_status_t aiprov_decrypt(apr_pool_t *p, const aiprov_keyring_t *ring,
                            const char *b64, char **plain, apr_size_t *len);

/* Lowercase hex SHA-256. */
const char *aiprov_sha256_hex(apr_pool_t *p, const void *data, apr_size_t len);

/* A lowercase UUID v4 from the CSPRNG, or NULL if it failed. */
const char *aiprov_uuid4(apr_pool_t *p);

/* base64url without padding (RFC 4648 section 5), as PKCE wants it. */
const char *aiprov_base64url(apr_pool_t *p, const unsigned char *data, apr_size_t len);

/* SHA-256 of data into md. */
void aiprov_sha256(const void *data, apr_size_t len, unsigned char md[32]);

/* Bytes from the CSPRNG. */
apr_status_t aiprov_random(void *buf, apr_size_t len);

/* Wipe memory the compiler may not optimise away. */
void aiprov_wipe(void *buf, apr_size_t len);

/* Wipe buf when p is cleared (request memory that held a secret). */
void aiprov_wipe_on_cleanup(apr_pool_t *p, void *buf, apr_size_t len);

/* Constant-time equality of two strings. */
int aiprov_str_equal_ct(const char *a, const char *b);

#endif
