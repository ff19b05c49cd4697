/* The ai_provider rows of one user, on mod_dbd. */
#include "aiprov_store.h"
#include "aiprov_config.h"

/*
 * The SQL, per dialect. SQLite keeps unix seconds and 0/1; PostgreSQL
 * timestamptz and boolean, read back as the same numbers so that one reader
 * serves both. apr_dbd binds every %s as varchar on PostgreSQL: hence the
 * CASTs there.
 */
#define COLS_SQLITE \
    "id, provider, provider_user_id, key_label, key_hash, is_active, is_default, " \
    "usage_limit, current_usage, created_at, updated_at, last_used_at, " \
    "supported_models, provider_config, api_url, api_key"
#define EPOCH_PG(c) "CAST(FLOOR(EXTRACT(EPOCH FROM " c ")) AS BIGINT)"
#define COLS_PGSQL \
    "id, provider, provider_user_id, key_label, key_hash, CAST(is_active AS INTEGER), " \
    "CAST(is_default AS INTEGER), usage_limit, current_usage, " EPOCH_PG("created_at") \
    ", " EPOCH_PG("updated_at") ", " EPOCH_PG("last_used_at") \
    ", supported_models, provider_config, api_url, api_key"

static const aiprov_sql_t sql_list = {
    "aiprov_provider_list",
    "SELECT " COLS_SQLITE " FROM ai_provider WHERE user_id = %s ORDER BY created_at, rowid",
    "SELECT " COLS_PGSQL " FROM ai_provider WHERE user_id = %s ORDER BY created_at, id"
};

static const aiprov_sql_t sql_get = {
    "aiprov_provider_get",
    "SELECT " COLS_SQLITE " FROM ai_provider WHERE id = %s AND user_id = %s",
    "SELECT " COLS_PGSQL " FROM ai_provider WHERE id = %s AND user_id = %s"
};

static const aiprov_sql_t sql_exists = {
    "aiprov_provider_exists",
    "SELECT id FROM ai_provider WHERE user_id = %s AND provider = %s",
    "SELECT id FROM ai_provider WHERE user_id = %s AND provider = %s"
};

/* Serialises one user's writes. SQLite needs none: its transactions begin
 * IMMEDIATE and so hold the database's write lock already. */
static const aiprov_sql_t sql_lock_user = {
    "aiprov_lock_user",
    NULL,
    "SELECT pg_advisory_xact_lock(hashtext(%s))"
};

static const aiprov_sql_t sql_clear_default = {
    "aiprov_provider_clear_default",
    "UPDATE ai_provider SET is_default = 0, updated_at = unixepoch() "
    "WHERE user_id = %s AND is_default = 1 AND id <> %s",
    "UPDATE ai_provider SET is_default = false, updated_at = now() "
    "WHERE user_id = %s AND is_default AND id <> %s"
};

static const aiprov_sql_t sql_insert = {
    "aiprov_provider_insert",
    "INSERT INTO ai_provider (id, user_id, provider, provider_user_id, api_key, key_hash, "
    "key_label, api_url, is_active, is_default, usage_limit, current_usage, created_at, "
    "updated_at, supported_models, provider_config) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
    "1, CAST(%s AS INTEGER), CAST(%s AS INTEGER), 0, unixepoch(), unixepoch(), %s, %s)",
    "INSERT INTO ai_provider (id, user_id, provider, provider_user_id, api_key, key_hash, "
    "key_label, api_url, is_active, is_default, usage_limit, current_usage, created_at, "
    "updated_at, supported_models, provider_config) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
    "true, CAST(%s AS BOOLEAN), CAST(%s AS BIGINT), 0, now(), now(), %s, %s)"
};

/* One statement whatever the fields: each value comes with a flag saying
 * whether it applies, so concurrent partial updates never undo each other. */
#define SET_IF(col, val) col " = CASE WHEN %s = '1' THEN " val " ELSE " col " END, "
static const aiprov_sql_t sql_update = {
    "aiprov_provider_update",
    "UPDATE ai_provider SET "
    SET_IF("key_label", "%s")
    SET_IF("is_active", "CAST(%s AS INTEGER)")
    SET_IF("is_default", "CAST(%s AS INTEGER)")
    SET_IF("usage_limit", "CAST(%s AS INTEGER)")
    SET_IF("supported_models", "%s")
    SET_IF("provider_config", "%s")
    "updated_at = unixepoch() WHERE id = %s AND user_id = %s",
    "UPDATE ai_provider SET "
    SET_IF("key_label", "%s")
    SET_IF("is_active", "CAST(%s AS BOOLEAN)")
    SET_IF("is_default", "CAST(%s AS BOOLEAN)")
    SET_IF("usage_limit", "CAST(%s AS BIGINT)")
    SET_IF("supported_models", "%s")
    SET_IF("provider_config", "%s")
    "updated_at = now() WHERE id = %s AND user_id = %s"
};

static const aiprov_sql_t sql_delete = {
    "aiprov_provider_delete",
    "DELETE FROM ai_provider WHERE id = %s AND user_id = %s",
    "DELETE FROM ai_provider WHERE id = %s AND user_id = %s"
};

static apr_int64_t to_i64(const char *s, apr_int64_t dflt)
{
    return s && *s ? apr_atoi64(s) : dflt;
}

static const char *dup_or_null(apr_pool_t *p, const char *s)
{
    return s ? apr_pstrdup(p, s) : NULL;
}

static aiprov_row_t *read_row(aiprov_db_t *db, apr_dbd_row_t *r)
{
    apr_pool_t *p = db->r->pool;
    aiprov_row_t *row = apr_pcalloc(p, sizeof(*row));

    row->id = dup_or_null(p, aiprov_db_get(db, r, 0));
    row->provider = dup_or_null(p, aiprov_db_get(db, r, 1));
    row->provider_user_id = dup_or_null(p, aiprov_db_get(db, r, 2));
    row->key_label = dup_or_null(p, aiprov_db_get(db, r, 3));
    row->key_hash = dup_or_null(p, aiprov_db_get(db, r, 4));
    row->is_active = to_i64(aiprov_db_get(db, r, 5), 0) != 0;
    row->is_default = to_i64(aiprov_db_get(db, r, 6), 0) != 0;
    row->usage_limit = dup_or_null(p, aiprov_db_get(db, r, 7));
    row->current_usage = to_i64(aiprov_db_get(db, r, 8), 0);
    row->created_at = to_i64(aiprov_db_get(db, r, 9), 0);
    row->updated_at = to_i64(aiprov_db_get(db, r, 10), 0);
    row->last_used_at = to_i64(aiprov_db_get(db, r, 11), AIPROV_NO_TIME);
    row->supported_models = dup_or_null(p, aiprov_db_get(db, r, 12));
    row->provider_config = dup_or_null(p, aiprov_db_get(db, r, 13));
    row->api_url = dup_or_null(p, aiprov_db_get(db, r, 14));
    row->api_key = dup_or_null(p, aiprov_db_get(db, r, 15));
    return row;
}

aiprov_err_e aiprov_store_list(aiprov_db_t *db, const char *user,
                               apr_array_header_t **rows)
{
    apr_dbd_results_t *res;
    apr_dbd_row_t *r = NULL;
    const char *args[] = { user };

    if (aiprov_db_select(db, &sql_list, &res, 1, args) != APR_SUCCESS) {
        return AIPROV_E_DATABASE_UNAVAILABLE;
    }
    *rows = apr_array_make(db->r->pool, 8, sizeof(aiprov_row_t *));
    while (aiprov_db_next_row(db, res, &r)) {
        APR_ARRAY_PUSH(*rows, aiprov_row_t *) = read_row(db, r);
    }
    return AIPROV_OK;
}

aiprov_err_e aiprov_store_get(aiprov_db_t *db, const char *user, const char *id,
                              aiprov_row_t **row)
{
    apr_dbd_results_t *res;
    apr_dbd_row_t *r = NULL;
    const char *args[] = { id, user };

    *row = NULL;
    if (aiprov_db_select(db, &sql_get, &res, 2, args) != APR_SUCCESS) {
        return AIPROV_E_DATABASE_UNAVAILABLE;
    }
    while (aiprov_db_next_row(db, res, &r)) {
        if (!*row) {
            *row = read_row(db, r);
        }
    }
    return *row ? AIPROV_OK : AIPROV_E_PROVIDER_NOT_FOUND;
}

/* Begin a transaction holding the user's write lock. */
static aiprov_err_e begin_for_user(aiprov_db_t *db, const char *user)
{
    const char *args[] = { user };
    const char *ignored;

    if (aiprov_db_begin(db) != APR_SUCCESS) {
        return AIPROV_E_DATABASE_UNAVAILABLE;
    }
    if (db->dialect == AIPROV_PGSQL
        && aiprov_db_select_one(db, &sql_lock_user, &ignored, 1, args) != APR_SUCCESS) {
        aiprov_db_rollback(db);
        aiprov_db_end(db);
        return AIPROV_E_DATABASE_UNAVAILABLE;
    }
    return AIPROV_OK;
}

/* End the transaction: commit when e is AIPROV_OK, else roll back. */
static aiprov_err_e finish(aiprov_db_t *db, aiprov_err_e e)
{
    if (e != AIPROV_OK) {
        aiprov_db_rollback(db);
    }
    if (aiprov_db_end(db) != APR_SUCCESS && e == AIPROV_OK) {
        return AIPROV_E_DATABASE_UNAVAILABLE;
    }
    return e;
}

static aiprov_err_e clear_other_defaults(aiprov_db_t *db, const char *user, const char *id)
{
    const char *args[] = { user, id };
    return aiprov_db_query(db, &sql_clear_default, NULL, 2, args) == APR_SUCCESS
           ? AIPROV_OK : AIPROV_E_DATABASE_UNAVAILABLE;
}

aiprov_err_e aiprov_store_create(aiprov_db_t *db, const char *user,
                                 const aiprov_new_row_t *n)
{
    const char *existing;
    const char *exists_args[] = { user, n->provider };
    const char *args[] = {
        n->id, user, n->provider, n->provider_user_id, n->api_key, n->key_hash,
        n->key_label, n->api_url, n->is_default ? "1" : "0", n->usage_limit,
        n->supported_models, n->provider_config
    };
    int nrows = 0;
    aiprov_err_e e;

    if ((e = begin_for_user(db, user)) != AIPROV_OK) {
        return e;
    }
    if (aiprov_db_select_one(db, &sql_exists, &existing, 2, exists_args) != APR_SUCCESS) {
        return finish(db, AIPROV_E_DATABASE_UNAVAILABLE);
    }
    if (existing) {
        return finish(db, AIPROV_E_DUPLICATE_PROVIDER);
    }
    if (n->is_default && (e = clear_other_defaults(db, user, n->id)) != AIPROV_OK) {
        return finish(db, e);
    }
    if (aiprov_db_query(db, &sql_insert, &nrows, 12, args) != APR_SUCCESS || nrows != 1) {
        return finish(db, AIPROV_E_DATABASE_UNAVAILABLE);
    }
    return finish(db, AIPROV_OK);
}

aiprov_err_e aiprov_store_update(aiprov_db_t *db, const char *user, const char *id,
                                 const aiprov_change_t *ch)
{
    aiprov_row_t *row;
    const char *label = ch->key_label;
    const char *args[14];
    int nrows = 0, i = 0;
    aiprov_err_e e;

    if ((e = begin_for_user(db, user)) != AIPROV_OK) {
        return e;
    }
    if ((e = aiprov_store_get(db, user, id, &row)) != AIPROV_OK) {
        return finish(db, e);
    }
    if (ch->set_key_label && !label) {
        int p = aiprov_provider_find(row->provider);
        label = p >= 0 ? aiprov_providers[p].display_name : row->provider;
    }
    if (ch->set_is_default && ch->is_default
        && (e = clear_other_defaults(db, user, id)) != AIPROV_OK) {
        return finish(db, e);
    }
#define FLAG(b) ((b) ? "1" : "0")
    args[i++] = FLAG(ch->set_key_label);        args[i++] = label;
    args[i++] = FLAG(ch->set_is_active);        args[i++] = FLAG(ch->is_active);
    args[i++] = FLAG(ch->set_is_default);       args[i++] = FLAG(ch->is_default);
    args[i++] = FLAG(ch->set_usage_limit);      args[i++] = ch->usage_limit;
    args[i++] = FLAG(ch->set_supported_models); args[i++] = ch->supported_models;
    args[i++] = FLAG(ch->set_provider_config);  args[i++] = ch->provider_config;
    args[i++] = id;                             args[i++] = user;
#undef FLAG
    if (aiprov_db_query(db, &sql_update, &nrows, i, args) != APR_SUCCESS) {
        return finish(db, AIPROV_E_DATABASE_UNAVAILABLE);
    }
    return finish(db, nrows == 1 ? AIPROV_OK : AIPROV_E_PROVIDER_NOT_FOUND);
}

/* A statement that changes the one row of the user's it names, if any. */
static aiprov_err_e change_one(aiprov_db_t *db, const aiprov_sql_t *sql, int nargs,
                               const char **args)
{
    int nrows = 0;
    if (aiprov_db_query(db, sql, &nrows, nargs, args) != APR_SUCCESS) {
        return AIPROV_E_DATABASE_UNAVAILABLE;
    }
    return nrows == 1 ? AIPROV_OK : AIPROV_E_PROVIDER_NOT_FOUND;
}

aiprov_err_e aiprov_store_delete(aiprov_db_t *db, const char *user, const char *id)
{
    const char *args[] = { id, user };
    return change_one(db, &sql_delete, 2, args);
}

/* ------------------------------------------------------------ usage */

/* Atomic: concurrent calls each add their own tokens. */
static const aiprov_sql_t sql_add_usage = {
    "aiprov_provider_add_usage",
    "UPDATE ai_provider SET current_usage = current_usage + CAST(%s AS INTEGER), "
    "last_used_at = unixepoch() WHERE id = %s AND user_id = %s",
    "UPDATE ai_provider SET current_usage = current_usage + CAST(%s AS BIGINT), "
    "last_used_at = now() WHERE id = %s AND user_id = %s"
};

static const aiprov_sql_t sql_set_models = {
    "aiprov_provider_set_models",
    "UPDATE ai_provider SET supported_models = %s, updated_at = unixepoch() "
    "WHERE id = %s AND user_id = %s",
    "UPDATE ai_provider SET supported_models = %s, updated_at = now() "
    "WHERE id = %s AND user_id = %s"
};

aiprov_err_e aiprov_store_add_usage(aiprov_db_t *db, const char *user, const char *id,
                                    apr_int64_t tokens)
{
    const char *args[] = { apr_psprintf(db->r->pool, "%" APR_INT64_T_FMT, tokens), id, user };
    return change_one(db, &sql_add_usage, 3, args);
}

aiprov_err_e aiprov_store_set_models(aiprov_db_t *db, const char *user, const char *id,
                                     const char *models_json)
{
    const char *args[] = { models_json, id, user };
    return change_one(db, &sql_set_models, 3, args);
}

/* ------------------------------------------------------------ keys from OAuth */

static const aiprov_sql_t sql_replace_key = {
    "aiprov_provider_replace_key",
    "UPDATE ai_provider SET api_key = %s, key_hash = %s, provider_user_id = %s, "
    "updated_at = unixepoch() WHERE id = %s AND user_id = %s",
    "UPDATE ai_provider SET api_key = %s, key_hash = %s, provider_user_id = %s, "
    "updated_at = now() WHERE id = %s AND user_id = %s"
};

aiprov_err_e aiprov_store_put_key(aiprov_db_t *db, const char *user,
                                  const aiprov_new_row_t *n, const char **id)
{
    const char *existing;
    const char *exists_args[] = { user, n->provider };
    int nrows = 0;
    aiprov_err_e e;

    if ((e = begin_for_user(db, user)) != AIPROV_OK) {
        return e;
    }
    if (aiprov_db_select_one(db, &sql_exists, &existing, 2, exists_args) != APR_SUCCESS) {
        return finish(db, AIPROV_E_DATABASE_UNAVAILABLE);
    }
    if (existing) {
        const char *args[] = { n->api_key, n->key_hash, n->provider_user_id, existing, user };
        if (aiprov_db_query(db, &sql_replace_key, &nrows, 5, args) != APR_SUCCESS
            || nrows != 1) {
            return finish(db, AIPROV_E_DATABASE_UNAVAILABLE);
        }
        *id = existing;
    }
    else {
        const char *args[] = {
            n->id, user, n->provider, n->provider_user_id, n->api_key, n->key_hash,
            n->key_label, n->api_url, "0", n->usage_limit, n->supported_models,
            n->provider_config
        };
        if (aiprov_db_query(db, &sql_insert, &nrows, 12, args) != APR_SUCCESS
            || nrows != 1) {
            return finish(db, AIPROV_E_DATABASE_UNAVAILABLE);
        }
        *id = n->id;
    }
    return finish(db, AIPROV_OK);
}

/* ------------------------------------------------------------ OAuth states */

#define AIPROV_STATE_TTL "600"

static const aiprov_sql_t sql_state_purge = {
    "aiprov_state_purge",
    "DELETE FROM ai_provider_oauth_state WHERE expires_at <= unixepoch()",
    "DELETE FROM ai_provider_oauth_state WHERE expires_at <= now()"
};

static const aiprov_sql_t sql_state_add = {
    "aiprov_state_add",
    "INSERT INTO ai_provider_oauth_state (state_hash, user_id, code_verifier, "
    "callback_url, expires_at) VALUES (%s, %s, %s, %s, unixepoch() + " AIPROV_STATE_TTL ")",
    "INSERT INTO ai_provider_oauth_state (state_hash, user_id, code_verifier, "
    "callback_url, expires_at) VALUES (%s, %s, %s, %s, now() + interval '"
    AIPROV_STATE_TTL " seconds')"
};

/* One statement takes it: two exchanges racing with one state get one row. */
static const aiprov_sql_t sql_state_take = {
    "aiprov_state_take",
    "DELETE FROM ai_provider_oauth_state WHERE state_hash = %s AND user_id = %s "
    "RETURNING code_verifier, CASE WHEN expires_at > unixepoch() THEN 0 ELSE 1 END",
    "DELETE FROM ai_provider_oauth_state WHERE state_hash = %s AND user_id = %s "
    "RETURNING code_verifier, CASE WHEN expires_at > now() THEN 0 ELSE 1 END"
};

aiprov_err_e aiprov_store_state_add(aiprov_db_t *db, const char *user,
                                    const char *state_hash, const char *verifier_enc,
                                    const char *callback_url)
{
    const char *args[] = { state_hash, user, verifier_enc, callback_url };
    int nrows = 0;

    if (aiprov_db_query(db, &sql_state_purge, NULL, 0, NULL) != APR_SUCCESS
        || aiprov_db_query(db, &sql_state_add, &nrows, 4, args) != APR_SUCCESS
        || nrows != 1) {
        return AIPROV_E_DATABASE_UNAVAILABLE;
    }
    return AIPROV_OK;
}

aiprov_err_e aiprov_store_state_take(aiprov_db_t *db, const char *user,
                                     const char *state_hash, const char **verifier_enc,
                                     int *expired)
{
    const char *args[] = { state_hash, user };
    apr_dbd_results_t *res;
    apr_dbd_row_t *r = NULL;

    *verifier_enc = NULL;
    *expired = 0;
    if (aiprov_db_select(db, &sql_state_take, &res, 2, args) != APR_SUCCESS) {
        return AIPROV_E_DATABASE_UNAVAILABLE;
    }
    while (aiprov_db_next_row(db, res, &r)) {
        if (!*verifier_enc) {
            *verifier_enc = dup_or_null(db->r->pool, aiprov_db_get(db, r, 0));
            *expired = to_i64(aiprov_db_get(db, r, 1), 1) != 0;
        }
    }
    if (aiprov_db_query(db, &sql_state_purge, NULL, 0, NULL) != APR_SUCCESS) {
        return AIPROV_E_DATABASE_UNAVAILABLE;
    }
    return *verifier_enc ? AIPROV_OK : AIPROV_E_PROVIDER_NOT_FOUND;
}
