/*
 * OpenRouter in one click: OAuth PKCE.
 *  authorize: the server makes verifier, challenge and a single-use state,
 *             keeps the verifier, and answers the URL to send the browser to.
 *  exchange:  the code (with that state, or with the browser's own verifier,
 *             as the seed has it) is traded for a key at OpenRouter, and the
 *             key stored like any other.
 */
#include "aiprov_handler.h"
#include "aiprov_crypto.h"
#include "aiprov_http.h"
#include "aiprov_io.h"
#include "aiprov_store.h"
#include "aiprov_validate.h"

#include <apr_lib.h>
#include <apr_uri.h>

#define EXCHANGE_TIMEOUT_DEFAULT 30
#define EXCHANGE_RESPONSE_MAX (64 * 1024)   /* a key and a user id: far less */
#define CODE_MAX 2048
#define VERIFIER_MIN 43
#define VERIFIER_MAX 128
#define ERROR_TEXT_MAX 200

/* 43–128 characters of [A-Za-z0-9-._~] (RFC 7636 section 4.1). */
static int is_verifier(const char *v)
{
    apr_size_t n = strlen(v), i;
    if (n < VERIFIER_MIN || n > VERIFIER_MAX) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (!apr_isalnum(v[i]) && !strchr("-._~", v[i])) {
            return 0;
        }
    }
    return 1;
}

/* A string field of the body, or NULL when absent; *bad when not a string. */
static const char *get_string(json_t *body, const char *field, int *bad)
{
    json_t *v = json_object_get(body, field);
    if (!v) {
        return NULL;
    }
    if (!json_is_string(v)) {
        *bad = 1;
        return NULL;
    }
    return json_string_value(v);
}

/* Read the JSON body and refuse fields other than the allowed ones. */
static int read_body(request_rec *r, const char *const allowed[], json_t **body)
{
    const char *field;
    json_t *v;
    int i, rc;

    if ((rc = aiprov_read_json_object(r, body)) != OK) {
        return rc;
    }
    json_object_foreach(*body, field, v) {
        for (i = 0; allowed[i] && strcmp(allowed[i], field) != 0; i++)
            ;
        if (!allowed[i]) {
            aiprov_send_error(r, AIPROV_E_INVALID_REQUEST, "unknown field %s",
                              aiprov_field_name(r->pool, field));
            return DONE;
        }
    }
    return OK;
}

static int check_callback(apr_pool_t *p, const char *url)
{
    apr_uri_t uri;
    const char *c;

    if (strlen(url) > AIPROV_URL_MAX
        || (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0)
        || apr_uri_parse(p, url, &uri) != APR_SUCCESS || !uri.hostname || !*uri.hostname
        || uri.fragment) {
        return 0;
    }
    for (c = url; *c; c++) {
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f) {
            return 0;
        }
    }
    return 1;
}

/* Percent-encode all but the unreserved characters (RFC 3986). */
static const char *urlencode(apr_pool_t *p, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = apr_palloc(p, strlen(s) * 3 + 1), *o = out;

    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (apr_isalnum(c) || strchr("-._~", c)) {
            *o++ = (char)c;
        }
        else {
            *o++ = '%';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    *o = '\0';
    return out;
}

int aiprov_api_openrouter_authorize(aiprov_req_t *q)
{
    static const char *const allowed[] = { "callbackUrl", NULL };
    request_rec *r = q->r;
    json_t *body;
    const char *callback, *state, *verifier, *challenge, *verifier_enc, *base;
    const char *callback_with_state;
    unsigned char rnd[32], md[32];
    int rc, bad = 0;
    aiprov_err_e e;

    if ((rc = read_body(r, allowed, &body)) != OK) {
        return rc;
    }
    callback = get_string(body, "callbackUrl", &bad);
    if (!callback || bad || !check_callback(r->pool, callback)) {
        return aiprov_send_error(r, AIPROV_E_INVALID_REQUEST, "callbackUrl must be an "
                                 "http:// or https:// URL with a host and no fragment");
    }
    if (!q->conf->keyring) {
        return aiprov_send_error(r, AIPROV_E_ENCRYPTION_FAILED,
                                 "the server has no encryption key configured");
    }

    /* verifier: 32 random bytes are 43 base64url characters */
    if (aiprov_random(rnd, sizeof(rnd)) != APR_SUCCESS) {
        return aiprov_send_error(r, AIPROV_E_ENCRYPTION_FAILED, "no random numbers");
    }
    verifier = aiprov_base64url(r->pool, rnd, sizeof(rnd));
    aiprov_wipe_on_cleanup(r->pool, (char *)verifier, strlen(verifier));
    aiprov_sha256(verifier, strlen(verifier), md);
    challenge = aiprov_base64url(r->pool, md, sizeof(md));
    if (aiprov_random(rnd, sizeof(rnd)) != APR_SUCCESS) {
        return aiprov_send_error(r, AIPROV_E_ENCRYPTION_FAILED, "no random numbers");
    }
    state = aiprov_base64url(r->pool, rnd, sizeof(rnd));
    aiprov_wipe(rnd, sizeof(rnd));

    if (aiprov_encrypt(r->pool, q->conf->keyring, verifier, strlen(verifier),
                       &verifier_enc) != APR_SUCCESS) {
        return aiprov_send_error(r, AIPROV_E_ENCRYPTION_FAILED,
                                 "the verifier could not be encrypted");
    }
    e = aiprov_store_state_add(q->db, q->user, aiprov_sha256_hex(r->pool, state, strlen(state)),
                               verifier_enc, callback);
    if (e != AIPROV_OK) {
        return aiprov_send_error(r, e, "the database is unavailable");
    }

    /* OpenRouter has no state parameter: it rides in the callback's query */
    callback_with_state = apr_pstrcat(r->pool, callback, strchr(callback, '?') ? "&" : "?",
                                      "state=", state, NULL);
    base = aiprov_config_openrouter_auth_url(q->conf);
    return aiprov_send_json(r, HTTP_OK, json_pack(
        "{s:s, s:s}",
        "authUrl", apr_pstrcat(r->pool, base, strchr(base, '?') ? "&" : "?",
                               "callback_url=", urlencode(r->pool, callback_with_state),
                               "&code_challenge=", challenge,
                               "&code_challenge_method=S256", NULL),
        "state", state));
}

/* OpenRouter's own error text, if it is fit to pass on: printable, short,
 * and without the code or the verifier in it. */
static const char *upstream_error_text(apr_pool_t *p, const aiprov_http_resp_t *resp,
                                       const char *code, const char *verifier)
{
    json_t *j = json_loadb(resp->body, resp->len, 0, NULL);
    json_t *e;
    const char *text = NULL;
    char *out, *c;

    if (!j) {
        return NULL;
    }
    e = json_object_get(j, "error");
    if (json_is_object(e)) {
        e = json_object_get(e, "message");
    }
    if (!json_is_string(e)) {
        e = json_object_get(j, "message");
    }
    if (json_is_string(e)) {
        text = apr_pstrndup(p, json_string_value(e), ERROR_TEXT_MAX);
    }
    json_decref(j);
    if (!text || strstr(text, code) || strstr(text, verifier)) {
        return NULL;
    }
    out = apr_pstrdup(p, text);
    for (c = out; *c; c++) {
        if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f) {
            *c = ' ';
        }
    }
    return out;
}

/* The JSON OpenRouter takes, malloc'd; jansson's copy of the verifier is wiped. */
static char *exchange_payload(const char *code, const char *verifier, const char *method)
{
    json_t *j = json_pack("{s:s, s:s, s:s}", "code", code, "code_verifier", verifier,
                          "code_challenge_method", method);
    json_t *v;
    char *payload;

    if (!j) {
        return NULL;
    }
    payload = json_dumps(j, JSON_COMPACT);
    v = json_object_get(j, "code_verifier");
    aiprov_wipe((char *)json_string_value(v), json_string_length(v));
    json_decref(j);
    return payload;
}

static int exchange_failed(request_rec *r, const char *message)
{
    return aiprov_send_error(r, AIPROV_E_OAUTH_EXCHANGE_FAILED, "%s", message);
}

int aiprov_api_openrouter_exchange(aiprov_req_t *q)
{
    static const char *const allowed[] = {
        "code", "codeVerifier", "codeChallengeMethod", "state", NULL
    };
    request_rec *r = q->r;
    json_t *body, *answer, *jkey, *juser;
    const char *code, *verifier, *method, *state, *key_err;
    char *verifier_plain = NULL;
    apr_size_t verifier_len = 0;
    aiprov_http_req_t req;
    aiprov_http_resp_t resp;
    aiprov_http_result_e hr;
    aiprov_new_row_t row;
    apr_array_header_t *headers;
    const char *id;
    char *payload;
    int rc, bad = 0, timeout;
    aiprov_err_e e;

    if ((rc = read_body(r, allowed, &body)) != OK) {
        return rc;
    }
    code = get_string(body, "code", &bad);
    verifier = get_string(body, "codeVerifier", &bad);
    method = get_string(body, "codeChallengeMethod", &bad);
    state = get_string(body, "state", &bad);
    if (bad) {
        return aiprov_send_error(r, AIPROV_E_INVALID_REQUEST, "code, codeVerifier, "
                                 "codeChallengeMethod and state must be strings");
    }
    if (!code || !*code || strlen(code) > CODE_MAX) {
        return aiprov_send_error(r, AIPROV_E_INVALID_REQUEST,
                                 "code is required (1 to 2048 characters)");
    }
    if (!state == !verifier) {
        return aiprov_send_error(r, AIPROV_E_INVALID_REQUEST,
                                 "send either state (from authorize) or codeVerifier");
    }
    if (state && method) {
        return aiprov_send_error(r, AIPROV_E_INVALID_REQUEST,
                                 "codeChallengeMethod goes with codeVerifier, not state");
    }
    if (!method) {
        method = "S256";
    }
    else if (strcmp(method, "S256") != 0 && strcmp(method, "plain") != 0) {
        return aiprov_send_error(r, AIPROV_E_INVALID_REQUEST,
                                 "codeChallengeMethod must be S256 or plain");
    }
    if (!q->conf->keyring) {
        return aiprov_send_error(r, AIPROV_E_ENCRYPTION_FAILED,
                                 "the server has no encryption key configured");
    }

    if (state) {
        const char *verifier_enc;
        int expired = 0;
        /* taken whatever happens next: a state is good for one try */
        e = aiprov_store_state_take(q->db, q->user,
                                    aiprov_sha256_hex(r->pool, state, strlen(state)),
                                    &verifier_enc, &expired);
        if (e == AIPROV_E_PROVIDER_NOT_FOUND) {
            return exchange_failed(r, "the state is unknown, used already or "
                                   "not yours: start again with authorize");
        }
        if (e != AIPROV_OK) {
            return aiprov_send_error(r, e, "the database is unavailable");
        }
        if (expired) {
            return exchange_failed(r, "the state has expired (10 minutes): start "
                                   "again with authorize");
        }
        if (aiprov_decrypt(r->pool, q->conf->keyring, verifier_enc, &verifier_plain,
                           &verifier_len) != APR_SUCCESS) {
            return aiprov_send_error(r, AIPROV_E_ENCRYPTION_FAILED,
                                     "the stored verifier does not decrypt");
        }
        verifier = verifier_plain;
    }
    if (!is_verifier(verifier)) {
        return exchange_failed(r, "codeVerifier must be 43 to 128 characters of "
                               "A-Z, a-z, 0-9, -, ., _ and ~");
    }

    if ((payload = exchange_payload(code, verifier, method)) == NULL) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    memset(&req, 0, sizeof(req));
    headers = apr_array_make(r->pool, 2, sizeof(const char *));
    APR_ARRAY_PUSH(headers, const char *) = "Content-Type: application/json";
    APR_ARRAY_PUSH(headers, const char *) = "Accept: application/json";
    req.method = "POST";
    req.url = aiprov_config_openrouter_exchange_url(q->conf);
    req.headers = headers;
    req.body = payload;
    req.body_len = strlen(payload);
    timeout = aiprov_config_upstream_timeout(q->conf, EXCHANGE_TIMEOUT_DEFAULT);
    req.timeout = timeout;
    req.max_response = EXCHANGE_RESPONSE_MAX;
    hr = aiprov_http_fetch(r, &req, &resp);
    aiprov_wipe(payload, strlen(payload));
    free(payload);

    switch (hr) {
    case AIPROV_HTTP_OK:
        break;
    case AIPROV_HTTP_TIMEOUT:
        return aiprov_send_error(r, AIPROV_E_OAUTH_EXCHANGE_FAILED,
                                 "OpenRouter did not answer within %d seconds", timeout);
    case AIPROV_HTTP_TOO_LARGE:
        return exchange_failed(r, "OpenRouter's answer was too large to be a key");
    case AIPROV_HTTP_UNREACHABLE:
        return exchange_failed(r, "OpenRouter is unreachable");
    default:
        return exchange_failed(r, "the call to OpenRouter failed");
    }
    if (resp.status < 200 || resp.status > 299) {
        const char *text = upstream_error_text(r->pool, &resp, code, verifier);
        return aiprov_send_error(r, AIPROV_E_OAUTH_EXCHANGE_FAILED,
                                 "OpenRouter refused the code (HTTP %ld%s%s)", resp.status,
                                 text ? ": " : "", text ? text : "");
    }
    answer = aiprov_json_pool(r->pool, json_loadb(resp.body, resp.len, 0, NULL));
    jkey = json_object_get(answer, "key");
    if (!json_is_string(jkey)) {
        return exchange_failed(r, "OpenRouter answered without a key");
    }
    if ((key_err = aiprov_validate_key_format(r->pool, AIPROV_P_OPENROUTER,
                                              json_string_value(jkey),
                                              json_string_length(jkey))) != NULL) {
        aiprov_wipe((char *)json_string_value(jkey), json_string_length(jkey));
        return exchange_failed(r, "OpenRouter answered with a key this server "
                               "cannot use");
    }

    memset(&row, 0, sizeof(row));
    row.provider = "openrouter";
    row.key_label = "OpenRouter";
    juser = json_object_get(answer, "user_id");
    if (json_is_string(juser) && json_string_length(juser) >= 1
        && json_string_length(juser) <= AIPROV_PROVIDER_USER_MAX) {
        row.provider_user_id = apr_pstrdup(r->pool, json_string_value(juser));
    }
    e = aiprov_encrypt(r->pool, q->conf->keyring, json_string_value(jkey),
                       json_string_length(jkey), &row.api_key) == APR_SUCCESS
        ? AIPROV_OK : AIPROV_E_ENCRYPTION_FAILED;
    row.key_hash = aiprov_sha256_hex(r->pool, json_string_value(jkey),
                                     json_string_length(jkey));
    aiprov_wipe((char *)json_string_value(jkey), json_string_length(jkey));
    if (e != AIPROV_OK || !row.key_hash || !(row.id = aiprov_uuid4(r->pool))) {
        return aiprov_send_error(r, AIPROV_E_ENCRYPTION_FAILED,
                                 "the key could not be encrypted");
    }
    if ((e = aiprov_store_put_key(q->db, q->user, &row, &id)) != AIPROV_OK) {
        return aiprov_send_error(r, AIPROV_E_DATABASE_UNAVAILABLE,
                                 "the database is unavailable");
    }
    return aiprov_send_json(r, HTTP_OK, json_pack("{s:b, s:s}", "success", 1, "id", id));
}
