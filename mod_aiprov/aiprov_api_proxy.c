/*
 * The metered proxy: ANY <mount>/{id}/proxy/{path} goes to the provider with
 * the stored key, the answer streams back as it arrives, and the tokens the
 * provider reports are added to the row's usage.
 *
 * The limit's guarantee: a call is let through only while current_usage is
 * below usage_limit, and usage is added when each call ends. So once the
 * usage that reaches the limit is written, every later call gets 429; the
 * overspend is at most what the calls already in flight at that moment
 * report (reserving before the call would need the token count in advance,
 * which no provider gives).
 */
#include "aiprov_handler.h"
#include "aiprov_crypto.h"
#include "aiprov_io.h"
#include "aiprov_store.h"
#include "aiprov_upstream.h"
#include "aiprov_usage.h"

#include <errno.h>
#include <sys/socket.h>

#include <apr_lib.h>
#include <apr_portable.h>
#include <http_core.h>
#include <http_protocol.h>
#include <http_request.h>

#define PROXY_TIMEOUT_DEFAULT 300
#define PROXY_BODY_MAX (32 * 1024 * 1024)     /* when LimitRequestBody is not set */
#define ERROR_BODY_MAX (64 * 1024)            /* an upstream error, kept to be masked */

typedef struct {
    request_rec *r;
    aiprov_usage_t *usage;
    long status;
    int passing;          /* a 2xx answer: streamed to the client */
    int streaming;        /* events: each piece flushed as it comes */
    apr_time_t checked;   /* when the client's socket was last looked at */
    int sent;             /* something went to the client already */
    int client_gone;
    apr_bucket_brigade *bb;
    char *err;            /* a non-2xx answer, held to be masked */
    apr_size_t err_len;
} proxy_t;

static int is_streaming(const char *ct)
{
    return ct && (strncasecmp(ct, "text/event-stream", 17) == 0
                  || strncasecmp(ct, "application/x-ndjson", 20) == 0);
}

static apr_status_t pass(proxy_t *x, apr_bucket *data)
{
    request_rec *r = x->r;
    apr_status_t rv;

    if (data) {
        APR_BRIGADE_INSERT_TAIL(x->bb, data);
    }
    if (x->streaming || !data) {
        APR_BRIGADE_INSERT_TAIL(x->bb, apr_bucket_flush_create(r->connection->bucket_alloc));
    }
    rv = ap_pass_brigade(r->output_filters, x->bb);
    apr_brigade_cleanup(x->bb);
    x->sent = 1;
    if (rv != APR_SUCCESS || r->connection->aborted) {
        x->client_gone = 1;
        return APR_ECONNABORTED;
    }
    return APR_SUCCESS;
}

static int on_head(void *ctx, long status, const char *ct, apr_off_t length)
{
    proxy_t *x = ctx;
    request_rec *r = x->r;

    x->status = status;
    x->usage = aiprov_usage_make(r->pool, ct);
    if (status < 200 || status > 299) {
        x->err = apr_palloc(r->pool, ERROR_BODY_MAX);
        if (ct) {
            ap_set_content_type(r, apr_pstrdup(r->pool, ct));
        }
        return 0;
    }
    x->passing = 1;
    r->status = (int)status;
    if (ct) {
        ap_set_content_type(r, apr_pstrdup(r->pool, ct));
    }
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    if (is_streaming(ct)) {
        /* the client sees the headers now, not with the first event */
        x->streaming = 1;
        apr_table_setn(r->headers_out, "X-Accel-Buffering", "no");
        return pass(x, NULL) == APR_SUCCESS ? 0 : 1;
    }
    if (length >= 0) {
        /* a whole document: its length, so no chunked framing (and a client
         * sees a short body for what it is) */
        ap_set_content_length(r, length);
    }
    return 0;
}

static int on_body(void *ctx, const char *data, apr_size_t len)
{
    proxy_t *x = ctx;

    if (!x->passing) {
        apr_size_t room = ERROR_BODY_MAX - x->err_len;
        if (len > room) {
            len = room;
        }
        memcpy(x->err + x->err_len, data, len);
        x->err_len += len;
        return 0;
    }
    aiprov_usage_feed(x->usage, data, len);
    return pass(x, apr_bucket_heap_create(data, len, NULL, x->r->connection->bucket_alloc))
           == APR_SUCCESS ? 0 : 1;
}

/* Has the client closed its side? Seen while the provider is still silent,
 * so a hanging upstream does not outlive the client who asked. */
static int on_tick(void *ctx)
{
    proxy_t *x = ctx;
    apr_os_sock_t fd;
    char b;
    ssize_t n;
    apr_time_t now = apr_time_now();

    /* curl calls this with every piece too: one look a second is enough */
    if (now - x->checked < apr_time_from_sec(1)) {
        return 0;
    }
    x->checked = now;
    if (apr_os_sock_get(&fd, ap_get_conn_socket(x->r->connection)) != APR_SUCCESS) {
        return 0;
    }
    n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        x->client_gone = 1;
        return 1;
    }
    return 0;
}

/* The path after "/{id}/proxy/" as the client wrote it (still encoded), and
 * the query: NULL when the path is no fit to append to a base URL. */
static const char *upstream_path(request_rec *r, const char *id)
{
    const char *raw = r->unparsed_uri, *q = strchr(raw, '?'), *c, *path = NULL;
    apr_size_t rawlen = q ? (apr_size_t)(q - raw) : strlen(raw);
    const char *marker = apr_pstrcat(r->pool, "/", id, "/proxy", NULL);
    apr_size_t ml = strlen(marker), i;

    for (i = 0; i + ml <= rawlen; i++) {
        if (raw[i] == '/' && strncasecmp(raw + i, marker, ml) == 0
            && (i + ml == rawlen || raw[i + ml] == '/')) {
            path = apr_pstrmemdup(r->pool, raw + i + ml, rawlen - i - ml);
            break;
        }
    }
    if (!path) {
        return NULL;
    }
    while (*path == '/') {
        path++;
    }
    /* no way out of the base: no dot segments, encoded or not */
    if (ap_strstr_c(path, "..") || ap_strcasestr(path, "%2e")) {
        return NULL;
    }
    for (c = path; *c; c++) {
        if (!apr_isalnum(*c) && !strchr("-._~!$&'()*+,;=:@/%", *c)) {
            return NULL;
        }
    }
    return q ? apr_pstrcat(r->pool, path, q, NULL) : path;
}

/* Streamed OpenAI-style calls report usage only when asked: ask, where the
 * provider takes the field (not OpenRouter, which always reports, nor
 * Cohere, which refuses it). The body is returned unchanged otherwise. */
static void ask_for_usage(request_rec *r, int provider, char **body, apr_size_t *len)
{
    json_t *j, *so;
    char *out;

    if (provider != AIPROV_P_OPENAI && provider != AIPROV_P_GROQ
        && provider != AIPROV_P_GEMINI) {
        return;
    }
    /* most calls are not streamed: no parse unless the word is there */
    if (!*len || !memmem(*body, *len, "\"stream\"", 8)) {
        return;
    }
    j = aiprov_json_pool(r->pool, json_loadb(*body, *len, 0, NULL));
    if (!json_is_object(j) || !json_is_true(json_object_get(j, "stream"))) {
        return;
    }
    so = json_object_get(j, "stream_options");
    if (json_is_object(so) && json_is_true(json_object_get(so, "include_usage"))) {
        return;
    }
    if (!json_is_object(so)) {
        so = json_object();
        json_object_set_new(j, "stream_options", so);
    }
    json_object_set_new(so, "include_usage", json_true());
    if ((out = json_dumps(j, JSON_COMPACT)) != NULL) {
        *len = strlen(out);
        *body = apr_pstrmemdup(r->pool, out, *len);
        free(out);
    }
}

/* Add what the provider reported. An answer that ended without usage is
 * logged and stamps last_used_at (never a silent free call); one that broke
 * off without usage counts nothing. */
static void record_usage(aiprov_req_t *q, proxy_t *x, int complete)
{
    apr_int64_t tokens = 0;
    int reported = x->usage && aiprov_usage_total(x->usage, &tokens);

    if (!reported) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, q->r, AIPROV_LOGNO(00601)
                      "provider %s answered HTTP %ld without reporting token usage%s",
                      q->id, x->status, complete ? "" : " before it broke off");
        if (!complete) {
            return;
        }
    }
    if (aiprov_db_reopen(q->db) != APR_SUCCESS
        || aiprov_store_add_usage(q->db, q->user, q->id, tokens) != AIPROV_OK) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, q->r, AIPROV_LOGNO(00602)
                      "the usage of provider %s (%" APR_INT64_T_FMT " tokens) "
                      "could not be recorded", q->id, tokens);
    }
}

int aiprov_api_proxy(aiprov_req_t *q)
{
    request_rec *r = q->r;
    aiprov_row_t *row;
    aiprov_err_e e;
    int provider, rc;
    const char *path, *base, *h;
    char *key, *body = NULL;
    apr_size_t key_len, body_len = 0;
    apr_array_header_t *headers;
    aiprov_http_req_t req;
    aiprov_http_sink_t sink;
    aiprov_http_result_e hr;
    proxy_t x;

    if (!(path = upstream_path(r, q->id))) {
        return aiprov_send_error(r, AIPROV_E_INVALID_REQUEST,
                                 "the path after /proxy/ is not one to forward");
    }
    if ((e = aiprov_store_get(q->db, q->user, q->id, &row)) != AIPROV_OK) {
        return aiprov_api_store_error(q, e);
    }
    if (!row->is_active) {
        return aiprov_send_error(r, AIPROV_E_PROVIDER_INACTIVE,
                                 "this provider is switched off (isActive is false)");
    }
    if (row->usage_limit && row->current_usage >= apr_atoi64(row->usage_limit)) {
        return aiprov_send_error(r, AIPROV_E_USAGE_LIMIT_EXCEEDED,
                                 "this provider's usage limit is reached");
    }
    provider = aiprov_provider_find(row->provider);
    base = provider >= 0 ? aiprov_upstream_base(r->pool, q->conf, provider, row->api_url)
                         : NULL;
    if (!base) {
        return aiprov_send_error(r, AIPROV_E_UPSTREAM_FAILED,
                                 "this provider has no upstream URL");
    }
    if ((e = aiprov_upstream_key(r->pool, q->conf, row, &key, &key_len)) != AIPROV_OK) {
        return aiprov_send_error(r, e, "the stored key cannot be decrypted");
    }
    /* no database connection is held while the client sends its body or
     * the provider takes its time */
    aiprov_db_release(q->db);

    if (apr_table_get(r->headers_in, "Transfer-Encoding")
        || apr_table_get(r->headers_in, "Content-Length")) {
        if ((rc = aiprov_read_body(r, aiprov_body_limit(r, PROXY_BODY_MAX), &body,
                                   &body_len)) != OK) {
            return rc;
        }
        ask_for_usage(r, provider, &body, &body_len);
    }

    /* only what the provider needs: never the client's credentials or cookies */
    headers = apr_array_make(r->pool, 6, sizeof(const char *));
    if ((h = apr_table_get(r->headers_in, "Content-Type")) != NULL) {
        APR_ARRAY_PUSH(headers, const char *) = apr_pstrcat(r->pool, "Content-Type: ", h, NULL);
    }
    if ((h = apr_table_get(r->headers_in, "Accept")) != NULL) {
        APR_ARRAY_PUSH(headers, const char *) = apr_pstrcat(r->pool, "Accept: ", h, NULL);
    }
    aiprov_upstream_auth(r->pool, provider, key, headers);

    memset(&req, 0, sizeof(req));
    req.method = r->method;
    /* Ollama: the OpenAI-compatible API below /v1, its native one below /api */
    req.url = provider == AIPROV_P_OLLAMA && strncmp(path, "api/", 4) != 0
              ? apr_pstrcat(r->pool, base, "/v1/", path, NULL)
              : apr_pstrcat(r->pool, base, "/", path, NULL);
    req.headers = headers;
    req.body = body;
    req.body_len = body_len;
    req.timeout = aiprov_config_upstream_timeout(q->conf, PROXY_TIMEOUT_DEFAULT);

    memset(&x, 0, sizeof(x));
    x.r = r;
    x.checked = apr_time_now();
    x.bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    sink.ctx = &x;
    sink.on_head = on_head;
    sink.on_body = on_body;
    sink.on_tick = on_tick;
    hr = aiprov_http_stream(r, &req, &sink);
    if (!x.passing && x.err) {
        /* the provider's own error may quote the key: masked while it is known */
        x.err = aiprov_upstream_mask(r->pool, x.err, x.err_len, key, &x.err_len);
    }
    if (key) {
        aiprov_wipe(key, key_len);
    }

    if (x.passing) {
        record_usage(q, &x, hr == AIPROV_HTTP_OK);
    }
    if (x.client_gone) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, AIPROV_LOGNO(00603)
                      "the client went away: the call to the provider was stopped");
        r->connection->keepalive = AP_CONN_CLOSE;
        return DONE;
    }
    if (x.passing) {
        if (hr != AIPROV_HTTP_OK) {
            /* a broken answer: 502 in the error bucket makes httpd drop the
             * connection without a last chunk, so the client sees truncation */
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, AIPROV_LOGNO(00604)
                          "the provider's answer broke off after it began");
            if (!x.sent) {
                return aiprov_send_error(r, hr == AIPROV_HTTP_TIMEOUT
                                         ? AIPROV_E_UPSTREAM_TIMEOUT : AIPROV_E_UPSTREAM_FAILED,
                                         "the provider's answer broke off");
            }
            r->connection->keepalive = AP_CONN_CLOSE;
            APR_BRIGADE_INSERT_TAIL(x.bb, ap_bucket_error_create(HTTP_BAD_GATEWAY, NULL,
                                    r->pool, r->connection->bucket_alloc));
            APR_BRIGADE_INSERT_TAIL(x.bb, apr_bucket_eos_create(r->connection->bucket_alloc));
            ap_pass_brigade(r->output_filters, x.bb);
            return DONE;
        }
        APR_BRIGADE_INSERT_TAIL(x.bb, apr_bucket_eos_create(r->connection->bucket_alloc));
        ap_pass_brigade(r->output_filters, x.bb);
        return DONE;
    }
    if (hr == AIPROV_HTTP_OK && x.status >= 100) {
        /* the provider's own error, passed on with key-shaped text masked */
        apr_size_t len = x.err_len;
        char *masked = x.err ? x.err : "";
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, AIPROV_LOGNO(00605)
                      "the provider answered HTTP %ld", x.status);
        r->status = (int)x.status;
        apr_table_setn(r->headers_out, "Cache-Control", "no-store");
        ap_set_content_length(r, (apr_off_t)len);
        APR_BRIGADE_INSERT_TAIL(x.bb, apr_bucket_pool_create(masked, len, r->pool,
                                                             r->connection->bucket_alloc));
        APR_BRIGADE_INSERT_TAIL(x.bb, apr_bucket_eos_create(r->connection->bucket_alloc));
        ap_pass_brigade(r->output_filters, x.bb);
        return DONE;
    }
    return aiprov_send_error(r, hr == AIPROV_HTTP_TIMEOUT ? AIPROV_E_UPSTREAM_TIMEOUT
                                                          : AIPROV_E_UPSTREAM_FAILED,
                             hr == AIPROV_HTTP_TIMEOUT
                             ? "the provider did not answer in time"
                             : "the provider could not be reached");
}
