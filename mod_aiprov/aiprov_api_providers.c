/* The five provider endpoints: list, create, get, update, delete. */
#include "aiprov_handler.h"
#include "aiprov_crypto.h"
#include "aiprov_io.h"
#include "aiprov_store.h"
#include "aiprov_upstream.h"
#include "aiprov_validate.h"

#include <apr_time.h>

/* ------------------------------------------------------------ rendering */

static json_t *iso_time(apr_int64_t secs)
{
    apr_time_exp_t t;
    char buf[32];
    apr_size_t len;

    if (secs == AIPROV_NO_TIME || apr_time_exp_gmt(&t, apr_time_from_sec(secs)) != APR_SUCCESS
        || apr_strftime(buf, &len, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &t) != APR_SUCCESS) {
        return json_null();
    }
    return json_stringn(buf, len);
}

static json_t *string_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

/* Stored JSON text back to JSON; null when absent or not of the type. */
static json_t *stored_json(const char *text, int want_array)
{
    json_t *j;
    if (!text || !(j = json_loads(text, 0, NULL))) {
        return json_null();
    }
    if (want_array ? !json_is_array(j) : !json_is_object(j)) {
        json_decref(j);
        return json_null();
    }
    return j;
}

/* The fields of the list; the detail adds to them. */
static json_t *render_summary(const aiprov_row_t *row)
{
    json_t *o = json_object();
    json_t *limit = json_null(), *remaining = json_null();

    if (row->usage_limit) {
        apr_int64_t l = apr_atoi64(row->usage_limit);
        limit = json_integer(l);
        remaining = json_integer(l > row->current_usage ? l - row->current_usage : 0);
    }
    json_object_set_new(o, "id", json_string(row->id));
    json_object_set_new(o, "provider", json_string(row->provider));
    json_object_set_new(o, "keyLabel", string_or_null(row->key_label));
    json_object_set_new(o, "keyHash", string_or_null(row->key_hash));
    json_object_set_new(o, "isActive", json_boolean(row->is_active));
    json_object_set_new(o, "isDefault", json_boolean(row->is_default));
    json_object_set_new(o, "usageLimit", limit);
    json_object_set_new(o, "usageRemaining", remaining);
    json_object_set_new(o, "currentUsage", json_integer(row->current_usage));
    json_object_set_new(o, "createdAt", iso_time(row->created_at));
    json_object_set_new(o, "lastUsedAt", iso_time(row->last_used_at));
    return o;
}

/*
 * Does the stored key open with a configured key and match its hash?
 * null when there is nothing to tell (no key stored, no key configured).
 */
static json_t *key_decryptable(aiprov_req_t *q, const aiprov_row_t *row)
{
    char *plain;
    apr_size_t len;
    int ok;

    if (!row->api_key || !q->conf->keyring) {
        return json_null();
    }
    if (aiprov_decrypt(q->r->pool, q->conf->keyring, row->api_key, &plain, &len)
        != APR_SUCCESS) {
        return json_false();
    }
    ok = row->key_hash
         && aiprov_str_equal_ct(aiprov_sha256_hex(q->r->pool, plain, len), row->key_hash);
    aiprov_wipe(plain, len);
    return json_boolean(ok);
}

static json_t *render_detail(aiprov_req_t *q, const aiprov_row_t *row)
{
    json_t *o = render_summary(row);
    json_object_set_new(o, "providerUserId", string_or_null(row->provider_user_id));
    json_object_set_new(o, "updatedAt", iso_time(row->updated_at));
    json_object_set_new(o, "supportedModels", stored_json(row->supported_models, 1));
    json_object_set_new(o, "providerConfig", stored_json(row->provider_config, 0));
    json_object_set_new(o, "apiUrl", string_or_null(row->api_url));
    json_object_set_new(o, "keyDecryptable", key_decryptable(q, row));
    return o;
}

int aiprov_api_store_error(aiprov_req_t *q, aiprov_err_e e)
{
    switch (e) {
    case AIPROV_E_PROVIDER_NOT_FOUND:
        return aiprov_send_error(q->r, e, "the provider was not found or is not yours");
    case AIPROV_E_DUPLICATE_PROVIDER:
        return aiprov_send_error(q->r, e, "you have this provider already: update or "
                                 "delete it instead");
    default:
        return aiprov_send_error(q->r, AIPROV_E_DATABASE_UNAVAILABLE,
                                 "the database is unavailable");
    }
}

/* ------------------------------------------------------------ endpoints */

int aiprov_api_list(aiprov_req_t *q)
{
    apr_array_header_t *rows;
    json_t *list;
    aiprov_err_e e = aiprov_store_list(q->db, q->user, &rows);
    int i;

    if (e != AIPROV_OK) {
        return aiprov_api_store_error(q, e);
    }
    list = json_array();
    for (i = 0; i < rows->nelts; i++) {
        json_array_append_new(list, render_summary(APR_ARRAY_IDX(rows, i, aiprov_row_t *)));
    }
    return aiprov_send_json(q->r, HTTP_OK, json_pack("{s:o}", "providers", list));
}

int aiprov_api_get(aiprov_req_t *q)
{
    aiprov_row_t *row;
    aiprov_err_e e = aiprov_store_get(q->db, q->user, q->id, &row);

    if (e != AIPROV_OK) {
        return aiprov_api_store_error(q, e);
    }
    return aiprov_send_json(q->r, HTTP_OK, json_pack("{s:o}", "provider", render_detail(q, row)));
}

/*
 * AIProvVerifyKeys: the provider's cheapest call with the new key. Only a
 * 401 or 403 refuses it; a provider that cannot be asked is a 502/504,
 * since nothing can be said of the key.
 */
static aiprov_err_e verify_new_key(aiprov_req_t *q, const aiprov_create_t *c,
                                   const char **err)
{
    aiprov_http_resp_t resp;
    aiprov_http_result_e hr = aiprov_upstream_verify(q->r, q->conf, c->provider,
                                                     c->row.api_url, c->api_key, &resp);
    if (hr == AIPROV_HTTP_TIMEOUT) {
        *err = "the provider did not answer in time: the key cannot be checked";
        return AIPROV_E_UPSTREAM_TIMEOUT;
    }
    if (hr != AIPROV_HTTP_OK) {
        *err = "the provider could not be reached: the key cannot be checked";
        return AIPROV_E_UPSTREAM_FAILED;
    }
    if (resp.status == HTTP_UNAUTHORIZED || resp.status == HTTP_FORBIDDEN) {
        *err = apr_psprintf(q->r->pool, "the provider rejected the key (HTTP %ld)",
                            resp.status);
        return AIPROV_E_INVALID_API_KEY;
    }
    return AIPROV_OK;
}

int aiprov_api_create(aiprov_req_t *q)
{
    json_t *body;
    aiprov_create_t c;
    const char *err = NULL;
    aiprov_err_e e;
    int rc;

    if ((rc = aiprov_read_json_object(q->r, &body)) != OK) {
        return rc;
    }
    e = aiprov_validate_create(q->r->pool, body, &c, &err);
    if (e == AIPROV_OK && aiprov_config_verify_keys(q->conf)) {
        e = verify_new_key(q, &c, &err);
    }
    if (e == AIPROV_OK && c.api_key) {
        if (!q->conf->keyring) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, q->r, AIPROV_LOGNO(00401)
                          "no AIProvEncryptionKeyFile for %s: keys cannot be stored",
                          q->mount);
            e = AIPROV_E_ENCRYPTION_FAILED;
            err = "the server has no encryption key configured";
        }
        else if (aiprov_encrypt(q->r->pool, q->conf->keyring, c.api_key, c.api_key_len,
                                &c.row.api_key) != APR_SUCCESS
                 || !(c.row.key_hash = aiprov_sha256_hex(q->r->pool, c.api_key,
                                                         c.api_key_len))) {
            e = AIPROV_E_ENCRYPTION_FAILED;
            err = "the key could not be encrypted";
        }
    }
    if (c.api_key) {
        /* the plaintext is done with: wipe it inside the parsed body */
        aiprov_wipe((char *)c.api_key, c.api_key_len);
    }
    if (e != AIPROV_OK) {
        return aiprov_send_error(q->r, e, "%s", err);
    }
    if (!(c.row.id = aiprov_uuid4(q->r->pool))) {
        return aiprov_send_error(q->r, AIPROV_E_ENCRYPTION_FAILED,
                                 "no random numbers for an id");
    }
    if ((e = aiprov_store_create(q->db, q->user, &c.row)) != AIPROV_OK) {
        return aiprov_api_store_error(q, e);
    }
    apr_table_setn(q->r->headers_out, "Location",
                   apr_pstrcat(q->r->pool, q->mount, "/", c.row.id, NULL));
    return aiprov_send_json(q->r, HTTP_CREATED,
                            json_pack("{s:b, s:s}", "success", 1, "id", c.row.id));
}

int aiprov_api_update(aiprov_req_t *q)
{
    json_t *body;
    aiprov_change_t ch;
    const char *err = NULL;
    aiprov_err_e e;
    int rc;

    if ((rc = aiprov_read_json_object(q->r, &body)) != OK) {
        return rc;
    }
    if ((e = aiprov_validate_update(q->r->pool, body, &ch, &err)) != AIPROV_OK) {
        return aiprov_send_error(q->r, e, "%s", err);
    }
    if ((e = aiprov_store_update(q->db, q->user, q->id, &ch)) != AIPROV_OK) {
        return aiprov_api_store_error(q, e);
    }
    return aiprov_send_json(q->r, HTTP_OK, json_pack("{s:b}", "success", 1));
}

int aiprov_api_delete(aiprov_req_t *q)
{
    aiprov_err_e e = aiprov_store_delete(q->db, q->user, q->id);
    if (e != AIPROV_OK) {
        return aiprov_api_store_error(q, e);
    }
    return aiprov_send_json(q->r, HTTP_OK, json_pack("{s:b}", "success", 1));
}
