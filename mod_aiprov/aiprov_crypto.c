/* Encryption of stored secrets, hashes and random identifiers (OpenSSL 3). */
#include "aiprov_crypto.h"

#include <apr_base64.h>
#include <apr_file_io.h>
#include <apr_file_info.h>
#include <apr_lib.h>

#include <limits.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#define KEYFILE_MAX 4096   /* a key file is ~45 bytes; anything huge is a mistake */

void aiprov_wipe(void *buf, apr_size_t len)
{
    if (buf && len) {
        OPENSSL_cleanse(buf, len);
    }
}

int aiprov_str_equal_ct(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    return la == lb && CRYPTO_memcmp(a, b, la) == 0;
}

apr_status_t aiprov_random(void *buf, apr_size_t len)
{
    return RAND_bytes(buf, (int)len) == 1 ? APR_SUCCESS : APR_EGENERAL;
}

static apr_status_t wipe_keys(void *data)
{
    aiprov_keyring_t *ring = data;
    aiprov_wipe(ring->keys, (apr_size_t)ring->count * AIPROV_AES_KEY_LEN);
    return APR_SUCCESS;
}

/* One key file into key; the message names the file, never its content. */
static const char *load_one(apr_pool_t *ptemp, const char *path,
                            unsigned char key[AIPROV_AES_KEY_LEN])
{
    apr_file_t *f;
    apr_finfo_t fi;
    apr_status_t rv;
    char buf[KEYFILE_MAX + 1];
    char decoded[KEYFILE_MAX];
    apr_size_t n = 0, start, end;
    int dlen;
    const char *err = NULL;
    char ebuf[120];

    rv = apr_stat(&fi, path, APR_FINFO_TYPE | APR_FINFO_PROT | APR_FINFO_SIZE, ptemp);
    if (rv != APR_SUCCESS) {
        return apr_psprintf(ptemp, "cannot read key file %s: %s", path,
                            apr_strerror(rv, ebuf, sizeof(ebuf)));
    }
    if (fi.filetype != APR_REG) {
        return apr_psprintf(ptemp, "key file %s is not a regular file", path);
    }
    if (fi.protection & (APR_GREAD | APR_GWRITE | APR_GEXECUTE
                         | APR_WREAD | APR_WWRITE | APR_WEXECUTE)) {
        return apr_psprintf(ptemp, "key file %s is accessible by group or others: "
                            "chmod 600 it", path);
    }
    if (fi.size > KEYFILE_MAX) {
        return apr_psprintf(ptemp, "key file %s is too large to be a key", path);
    }
    rv = apr_file_open(&f, path, APR_FOPEN_READ | APR_FOPEN_BINARY, 0, ptemp);
    if (rv != APR_SUCCESS) {
        return apr_psprintf(ptemp, "cannot open key file %s: %s", path,
                            apr_strerror(rv, ebuf, sizeof(ebuf)));
    }
    rv = apr_file_read_full(f, buf, KEYFILE_MAX, &n);
    apr_file_close(f);
    if (rv != APR_SUCCESS && rv != APR_EOF) {
        aiprov_wipe(buf, sizeof(buf));
        return apr_psprintf(ptemp, "cannot read key file %s: %s", path,
                            apr_strerror(rv, ebuf, sizeof(ebuf)));
    }

    /* the base64 text, surrounded by white space at most */
    for (start = 0; start < n && apr_isspace(buf[start]); start++)
        ;
    for (end = n; end > start && apr_isspace(buf[end - 1]); end--)
        ;
    buf[end] = '\0';
    if (end == start) {
        err = "is empty";
    }
    else {
        apr_size_t i;
        for (i = start; i < end; i++) {
            if (!apr_isalnum(buf[i]) && buf[i] != '+' && buf[i] != '/' && buf[i] != '=') {
                break;
            }
        }
        if (i < end || (end - start) % 4 != 0
            || apr_base64_decode_len(buf + start) > (int)sizeof(decoded)) {
            err = "is not base64";
        }
        else if ((dlen = apr_base64_decode_binary((unsigned char *)decoded, buf + start))
                 != AIPROV_AES_KEY_LEN) {
            err = "must hold the base64 of exactly 32 bytes (openssl rand -base64 32)";
        }
        else {
            memcpy(key, decoded, AIPROV_AES_KEY_LEN);
        }
    }
    aiprov_wipe(buf, sizeof(buf));
    aiprov_wipe(decoded, sizeof(decoded));
    return err ? apr_psprintf(ptemp, "key file %s %s", path, err) : NULL;
}

const char *aiprov_keyring_load(apr_pool_t *p, apr_pool_t *ptemp, int nfiles,
                                char *const files[], aiprov_keyring_t **out)
{
    aiprov_keyring_t *ring = apr_pcalloc(p, sizeof(*ring));
    int i;

    ring->keys = apr_pcalloc(p, (apr_size_t)nfiles * AIPROV_AES_KEY_LEN);
    ring->count = nfiles;
    apr_pool_cleanup_register(p, ring, wipe_keys, apr_pool_cleanup_null);
    for (i = 0; i < nfiles; i++) {
        const char *path = ap_server_root_relative(ptemp, files[i]);
        const char *err;
        if (!path) {
            return apr_psprintf(ptemp, "invalid key file path %s", files[i]);
        }
        if ((err = load_one(ptemp, path, ring->keys[i])) != NULL) {
            return err;
        }
    }
    *out = ring;
    return NULL;
}

apr_status_t aiprov_encrypt(apr_pool_t *p, const aiprov_keyring_t *ring,
                            const char *plain, apr_size_t len, const char **out)
{
    EVP_CIPHER_CTX *ctx;
    unsigned char *blob;
    apr_size_t blob_len = AIPROV_GCM_NONCE_LEN + len + AIPROV_GCM_TAG_LEN;
    int n = 0, fin = 0;
    apr_status_t rv = APR_EGENERAL;
    char *b64;

    if (!ring || ring->count < 1 || len > INT_MAX / 2) {
        return APR_EINVAL;
    }
    blob = apr_palloc(p, blob_len);
    if (aiprov_random(blob, AIPROV_GCM_NONCE_LEN) != APR_SUCCESS
        || !(ctx = EVP_CIPHER_CTX_new())) {
        return APR_EGENERAL;
    }
    if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, ring->keys[0], blob) == 1
        && EVP_EncryptUpdate(ctx, blob + AIPROV_GCM_NONCE_LEN, &n,
                             (const unsigned char *)plain, (int)len) == 1
        && EVP_EncryptFinal_ex(ctx, blob + AIPROV_GCM_NONCE_LEN + n, &fin) == 1
        && (apr_size_t)(n + fin) == len
        && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, AIPROV_GCM_TAG_LEN,
                               blob + AIPROV_GCM_NONCE_LEN + len) == 1) {
        b64 = apr_palloc(p, apr_base64_encode_len((int)blob_len));
        apr_base64_encode_binary(b64, blob, (int)blob_len);
        *out = b64;
        rv = APR_SUCCESS;
    }
    EVP_CIPHER_CTX_free(ctx);
    return rv;
}

/* One key: APR_SUCCESS only when the tag verifies. */
static apr_status_t open_with(const unsigned char *key, const unsigned char *blob,
                              apr_size_t ct_len, unsigned char *plain)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = 0, fin = 0;
    apr_status_t rv = APR_EGENERAL;

    if (!ctx) {
        return APR_ENOMEM;
    }
    if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, blob) == 1
        && EVP_DecryptUpdate(ctx, plain, &n, blob + AIPROV_GCM_NONCE_LEN, (int)ct_len) == 1
        && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, AIPROV_GCM_TAG_LEN,
                               (void *)(blob + AIPROV_GCM_NONCE_LEN + ct_len)) == 1
        && EVP_DecryptFinal_ex(ctx, plain + n, &fin) == 1
        && (apr_size_t)(n + fin) == ct_len) {
        rv = APR_SUCCESS;
    }
    EVP_CIPHER_CTX_free(ctx);
    return rv;
}

typedef struct {
    void *buf;
    apr_size_t len;
} wipe_t;

static apr_status_t wipe_cleanup(void *data)
{
    wipe_t *w = data;
    aiprov_wipe(w->buf, w->len);
    return APR_SUCCESS;
}

void aiprov_wipe_on_cleanup(apr_pool_t *p, void *buf, apr_size_t len)
{
    wipe_t *w = apr_palloc(p, sizeof(*w));
    w->buf = buf;
    w->len = len;
    apr_pool_cleanup_register(p, w, wipe_cleanup, apr_pool_cleanup_null);
}

apr_status_t aiprov_decrypt(apr_pool_t *p, const aiprov_keyring_t *ring,
                            const char *b64, char **plain, apr_size_t *len)
{
    apr_size_t b64_len;
    unsigned char *blob, *out;
    int blob_len, i;
    const char *c;

    if (!ring || ring->count < 1 || !b64) {
        return APR_EINVAL;
    }
    b64_len = strlen(b64);
    for (c = b64; *c; c++) {
        if (!apr_isalnum(*c) && *c != '+' && *c != '/' && *c != '=') {
            return APR_EINVAL;
        }
    }
    if (b64_len % 4 != 0 || b64_len > 64 * 1024) {
        return APR_EINVAL;
    }
    blob = apr_palloc(p, apr_base64_decode_len(b64));
    blob_len = apr_base64_decode_binary(blob, b64);
    if (blob_len < AIPROV_GCM_NONCE_LEN + AIPROV_GCM_TAG_LEN) {
        return APR_EINVAL;
    }
    out = apr_palloc(p, (apr_size_t)blob_len);  /* > ct_len + 1 */
    for (i = 0; i < ring->count; i++) {
        apr_size_t ct_len = (apr_size_t)blob_len - AIPROV_GCM_NONCE_LEN - AIPROV_GCM_TAG_LEN;
        if (open_with(ring->keys[i], blob, ct_len, out) == APR_SUCCESS) {
            out[ct_len] = '\0';
            *plain = (char *)out;
            *len = ct_len;
            aiprov_wipe_on_cleanup(p, out, ct_len);
            return APR_SUCCESS;
        }
        aiprov_wipe(out, ct_len);
    }
    return APR_EGENERAL;
}

void aiprov_sha256(const void *data, apr_size_t len, unsigned char md[32])
{
    SHA256(data, len, md);
}

const char *aiprov_base64url(apr_pool_t *p, const unsigned char *data, apr_size_t len)
{
    char *out = apr_palloc(p, apr_base64_encode_len((int)len));
    char *c;
    int n = apr_base64_encode_binary(out, data, (int)len);

    for (c = out; c < out + n && *c; c++) {
        if (*c == '+') {
            *c = '-';
        }
        else if (*c == '/') {
            *c = '_';
        }
        else if (*c == '=') {
            *c = '\0';
            break;
        }
    }
    return out;
}

const char *aiprov_sha256_hex(apr_pool_t *p, const void *data, apr_size_t len)
{
    unsigned char md[32];
    static const char hex[] = "0123456789abcdef";
    char *out;
    unsigned int i;

    aiprov_sha256(data, len, md);
    out = apr_palloc(p, 65);
    for (i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
    return out;
}

const char *aiprov_uuid4(apr_pool_t *p)
{
    unsigned char b[16];
    if (aiprov_random(b, sizeof(b)) != APR_SUCCESS) {
        return NULL;
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);   /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);   /* RFC 4122 variant */
    return apr_psprintf(p, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
                        "%02x%02x%02x%02x%02x%02x",
                        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
                        b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}
