/* Request bodies of the provider endpoints: types, bounds, key formats. */
#ifndef AIPROV_VALIDATE_H
#define AIPROV_VALIDATE_H

#include "aiprov.h"
#include "aiprov_store.h"
#include <jansson.h>

/* A validated create body. api_key points into the JSON: wiped by the caller. */
typedef struct {
    int provider;                /* index in aiprov_providers */
    const char *api_key;         /* plaintext or NULL */
    apr_size_t api_key_len;
    aiprov_new_row_t row;        /* all but id, api_key, key_hash */
} aiprov_create_t;

/* NULL when the key is acceptable for the provider, else why not. */
const char *aiprov_validate_key_format(apr_pool_t *p, int provider, const char *key,
                                       apr_size_t len);

/* Fill out from the body, or set err and return it. */
aiprov_err_e aiprov_validate_create(apr_pool_t *p, json_t *body, aiprov_create_t *out,
                                    const char **err);
aiprov_err_e aiprov_validate_update(apr_pool_t *p, json_t *body, aiprov_change_t *out,
                                    const char **err);

/* A body field's name fit to echo in a message: quoted when it looks like
 * a name, a description otherwise (a key pasted as a name never comes back). */
const char *aiprov_field_name(apr_pool_t *p, const char *field);

/* Is s a UUID (any case)? */
int aiprov_is_uuid(const char *s);

#endif
