/*
 * Asking the provider about a stored key, spending no tokens:
 *   GET  <mount>/{id}/models  refreshes supportedModels from the model list;
 *   POST <mount>/{id}/verify  tells whether the provider takes the key.
 */
#include "aiprov_handler.h"
#include "aiprov_crypto.h"
#include "aiprov_io.h"
#include "aiprov_store.h"
#include "aiprov_upstream.h"
#include "aiprov_validate.h"

/* The row, active or not, and its key; sends the error itself otherwise. */
static int load(aiprov_req_t *q, aiprov_row_t **row, int *provider, char **key,
                apr_size_t *key_len)
{
    aiprov_err_e e;

    if ((e = aiprov_store_get(q->db, q->user, q->id, row)) != AIPROV_OK) {
        return aiprov_api_store_error(q, e);
    }
    if ((*provider = aiprov_provider_find((*row)->provider)) < 0) {
        return aiprov_send_error(q->r, AIPROV_E_UPSTREAM_FAILED, "unknown provider");
    }
    if ((e = aiprov_upstream_key(q->r->pool, q->conf, *row, key, key_len)) != AIPROV_OK) {
        return aiprov_send_error(q->r, e, "the stored key cannot be decrypted");
    }
    return DECLINED;   /* go on */
}

static int upstream_error(request_rec *r, aiprov_http_result_e hr)
{
    return hr == AIPROV_HTTP_TIMEOUT
           ? aiprov_send_error(r, AIPROV_E_UPSTREAM_TIMEOUT, "the provider did not answer in time")
           : aiprov_send_error(r, AIPROV_E_UPSTREAM_FAILED, "the provider could not be reached");
}

int aiprov_api_models(aiprov_req_t *q)
{
    request_rec *r = q->r;
    aiprov_row_t *row;
    int provider, rc;
    char *key;
    apr_size_t key_len;
    const char *base, *text;
    aiprov_http_req_t req;
    aiprov_http_resp_t resp;
    aiprov_http_result_e hr;
    apr_array_header_t *headers;
    json_t *answer, *data, *item, *models;
    size_t i;
    char *models_json;
    aiprov_err_e e;

    if ((rc = load(q, &row, &provider, &key, &key_len)) != DECLINED) {
        return rc;
    }
    base = aiprov_upstream_base(r->pool, q->conf, provider, row->api_url);
    if (!base) {
        return aiprov_send_error(r, AIPROV_E_UPSTREAM_FAILED, "this provider has no upstream URL");
    }
    headers = apr_array_make(r->pool, 4, sizeof(const char *));
    APR_ARRAY_PUSH(headers, const char *) = "Accept: application/json";
    aiprov_upstream_auth(r->pool, provider, key, headers);
    memset(&req, 0, sizeof(req));
    req.method = "GET";
    req.url = apr_pstrcat(r->pool, base, provider == AIPROV_P_OLLAMA ? "/v1/models" : "/models",
                          NULL);
    req.headers = headers;
    req.timeout = aiprov_config_upstream_timeout(q->conf, AIPROV_VERIFY_TIMEOUT_DEFAULT);
    req.max_response = AIPROV_CHECK_RESPONSE_MAX;
    hr = aiprov_http_fetch(r, &req, &resp);
    if (key) {
        aiprov_wipe(key, key_len);
    }
    if (hr != AIPROV_HTTP_OK) {
        return upstream_error(r, hr);
    }
    if (resp.status < 200 || resp.status > 299) {
        return aiprov_send_error(r, AIPROV_E_UPSTREAM_FAILED,
                                 "the provider refused the model list (HTTP %ld)", resp.status);
    }
    /* {"data": [{"id": …}, …]}: OpenAI's shape, which all of them answer here */
    answer = aiprov_json_pool(r->pool, json_loadb(resp.body, resp.len, 0, NULL));
    data = json_object_get(answer, "data");
    if (!json_is_array(data)) {
        return aiprov_send_error(r, AIPROV_E_UPSTREAM_FAILED,
                                 "the provider's model list is not in the expected shape");
    }
    models = aiprov_json_pool(r->pool, json_array());
    json_array_foreach(data, i, item) {
        json_t *id = json_object_get(item, "id");
        if (json_is_string(id) && json_string_length(id) >= 1
            && json_string_length(id) <= AIPROV_MODEL_NAME_MAX
            && json_array_size(models) < AIPROV_MODELS_MAX) {
            json_array_append(models, id);
        }
    }
    if (!(models_json = json_dumps(models, JSON_COMPACT))) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    text = apr_pstrdup(r->pool, models_json);
    free(models_json);
    if ((e = aiprov_store_set_models(q->db, q->user, q->id, text)) != AIPROV_OK) {
        return aiprov_api_store_error(q, e);
    }
    return aiprov_send_json(r, HTTP_OK, json_pack("{s:O}", "supportedModels", models));
}

int aiprov_api_verify(aiprov_req_t *q)
{
    request_rec *r = q->r;
    aiprov_row_t *row;
    int provider, rc;
    char *key;
    apr_size_t key_len;
    aiprov_http_resp_t resp;
    aiprov_http_result_e hr;
    json_t *out;

    if ((rc = load(q, &row, &provider, &key, &key_len)) != DECLINED) {
        return rc;
    }
    hr = aiprov_upstream_verify(r, q->conf, provider, row->api_url, key, &resp);
    if (key) {
        aiprov_wipe(key, key_len);
    }
    if (hr != AIPROV_HTTP_OK) {
        return upstream_error(r, hr);
    }
    out = json_pack("{s:b, s:i}", "valid", resp.status >= 200 && resp.status <= 299,
                    "status", (json_int_t)resp.status);
    if (provider == AIPROV_P_OPENROUTER && resp.status >= 200 && resp.status <= 299) {
        /* {"data": {"limit": …, "usage": …}}: the key's own spending */
        json_t *answer = aiprov_json_pool(r->pool, json_loadb(resp.body, resp.len, 0, NULL));
        json_t *data = json_object_get(answer, "data");
        json_t *limit = json_object_get(data, "limit"), *usage = json_object_get(data, "usage");
        json_object_set(out, "limit", json_is_number(limit) ? limit : json_null());
        json_object_set(out, "usage", json_is_number(usage) ? usage : json_null());
    }
    return aiprov_send_json(r, HTTP_OK, out);
}
