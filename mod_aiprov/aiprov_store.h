/* The ai_provider rows of one user, on mod_dbd. */
#ifndef AIPROV_STORE_H
#define AIPROV_STORE_H

#include "aiprov.h"
#include "aiprov_db.h"

#define AIPROV_NO_TIME ((apr_int64_t)-1)

/* A row as read; strings are NULL for SQL NULL. */
typedef struct {
    const char *id;
    const char *provider;
    const char *provider_user_id;
    const char *key_label;
    const char *key_hash;
    int is_active;
    int is_default;
    const char *usage_limit;       /* decimal text or NULL */
    apr_int64_t current_usage;
    apr_int64_t created_at;        /* unix seconds */
    apr_int64_t updated_at;
    apr_int64_t last_used_at;      /* AIPROV_NO_TIME when never */
    const char *supported_models;  /* JSON text */
    const char *provider_config;   /* JSON text */
    const char *api_url;
    const char *api_key;           /* ciphertext, base64 */
} aiprov_row_t;

/* A new row: everything already validated and encrypted. */
typedef struct {
    const char *id;
    const char *provider;
    const char *provider_user_id;
    const char *api_key;           /* ciphertext or NULL (keyless ollama) */
    const char *key_hash;
    const char *key_label;
    const char *api_url;
    int is_default;
    const char *usage_limit;       /* decimal text or NULL */
    const char *supported_models;  /* JSON text or NULL */
    const char *provider_config;   /* JSON text or NULL */
} aiprov_new_row_t;

/* A change to a row: set_* tells which members apply. */
typedef struct {
    int set_key_label;          const char *key_label;  /* NULL: display name */
    int set_is_active;          int is_active;
    int set_is_default;         int is_default;
    int set_usage_limit;        const char *usage_limit;
    int set_supported_models;   const char *supported_models;
    int set_provider_config;    const char *provider_config;
} aiprov_change_t;

/* Results are AIPROV_OK or one of the contract's errors. */
aiprov_err_e aiprov_store_list(aiprov_db_t *db, const char *user,
                               apr_array_header_t **rows);
aiprov_err_e aiprov_store_get(aiprov_db_t *db, const char *user, const char *id,
                              aiprov_row_t **row);
aiprov_err_e aiprov_store_create(aiprov_db_t *db, const char *user,
                                 const aiprov_new_row_t *n);
aiprov_err_e aiprov_store_update(aiprov_db_t *db, const char *user, const char *id,
                                 const aiprov_change_t *ch);
aiprov_err_e aiprov_store_delete(aiprov_db_t *db, const char *user, const char *id);

/*
 * Store a key for the user's provider n->provider: a new row from n, or, when
 * the user has the provider already, its key, hash and provider user id
 * replaced. *id is the row's id.
 */
aiprov_err_e aiprov_store_put_key(aiprov_db_t *db, const char *user,
                                  const aiprov_new_row_t *n, const char **id);

/* Add tokens to the row's usage and stamp last_used_at, in one UPDATE. */
aiprov_err_e aiprov_store_add_usage(aiprov_db_t *db, const char *user, const char *id,
                                    apr_int64_t tokens);

/* Replace the row's supportedModels (JSON text). */
aiprov_err_e aiprov_store_set_models(aiprov_db_t *db, const char *user, const char *id,
                                     const char *models_json);

/* OAuth states (OpenRouter PKCE): kept for ten minutes, taken once. */
aiprov_err_e aiprov_store_state_add(aiprov_db_t *db, const char *user,
                                    const char *state_hash, const char *verifier_enc,
                                    const char *callback_url);

/*
 * Take (delete) the user's state: AIPROV_OK with the encrypted verifier and
 * *expired set when it was too old; AIPROV_E_PROVIDER_NOT_FOUND when it is
 * unknown, used already or another user's. Expired states are purged.
 */
aiprov_err_e aiprov_store_state_take(aiprov_db_t *db, const char *user,
                                     const char *state_hash, const char **verifier_enc,
                                     int *expired);

#endif
