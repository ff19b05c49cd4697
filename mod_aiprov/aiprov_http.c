/* Outbound HTTP: the module's only user of libcurl. */
#include "aiprov_http.h"
#include "aiprov_crypto.h"
#include "aiprov_io.h"

#include <curl/curl.h>

static int curl_ready;

static apr_status_t global_cleanup(void *data)
{
    curl_global_cleanup();
    curl_ready = 0;
    return APR_SUCCESS;
}

void aiprov_http_global_init(apr_pool_t *process_pool)
{
    /* not thread-safe in older libcurl: the parent does it, once */
    if (!curl_ready && curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK) {
        curl_ready = 1;
        apr_pool_cleanup_register(process_pool, NULL, global_cleanup,
                                  apr_pool_cleanup_null);
    }
}

typedef struct {
    apr_bucket_brigade *bb;
    apr_size_t len, max;
    int too_large;
} sink_t;

static size_t on_data(char *data, size_t size, size_t n, void *userp)
{
    sink_t *s = userp;
    size_t len = size * n;

    if (s->len + len > s->max) {
        s->too_large = 1;
        return 0;   /* stops the transfer */
    }
    if (apr_brigade_write(s->bb, NULL, NULL, data, len) != APR_SUCCESS) {
        return 0;
    }
    s->len += len;
    return len;
}

aiprov_http_result_e aiprov_http_fetch(request_rec *r, const aiprov_http_req_t *req,
                                       aiprov_http_resp_t *resp)
{
    CURL *c;
    CURLcode cc;
    struct curl_slist *hdrs = NULL;
    sink_t sink;
    char errbuf[CURL_ERROR_SIZE] = "";
    aiprov_http_result_e result = AIPROV_HTTP_FAILED;
    char *ct = NULL;
    int i;

    memset(resp, 0, sizeof(*resp));
    memset(&sink, 0, sizeof(sink));
    sink.bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    sink.max = req->max_response;

    if (!(c = curl_easy_init())) {
        return AIPROV_HTTP_FAILED;
    }
    for (i = 0; req->headers && i < req->headers->nelts; i++) {
        struct curl_slist *n = curl_slist_append(hdrs, APR_ARRAY_IDX(req->headers, i,
                                                                     const char *));
        if (!n) {
            goto end;
        }
        hdrs = n;
    }
    curl_easy_setopt(c, CURLOPT_URL, req->url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
    if (req->body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    }
    else if (strcmp(req->method, "GET") == 0) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    /* http and https only, no redirects: a key never follows a Location */
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)req->timeout);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)req->timeout);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "mod_aiprov");
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);

    cc = curl_easy_perform(c);
    if (cc == CURLE_OK) {
        result = AIPROV_HTTP_OK;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
        if (curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct) {
            resp->content_type = apr_pstrdup(r->pool, ct);
        }
    }
    else if (sink.too_large) {
        result = AIPROV_HTTP_TOO_LARGE;
    }
    else if (cc == CURLE_OPERATION_TIMEDOUT) {
        result = AIPROV_HTTP_TIMEOUT;
    }
    else if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST
             || cc == CURLE_SSL_CONNECT_ERROR || cc == CURLE_PEER_FAILED_VERIFICATION) {
        result = AIPROV_HTTP_UNREACHABLE;
    }
    if (result != AIPROV_HTTP_OK) {
        /* curl's message names hosts and errors, never headers or bodies */
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, AIPROV_LOGNO(00501)
                      "%s %s failed: %s", req->method, req->url,
                      *errbuf ? errbuf : curl_easy_strerror(cc));
    }
    else {
        char *body;
        apr_size_t len;
        if (apr_brigade_pflatten(sink.bb, &body, &len, r->pool) != APR_SUCCESS) {
            result = AIPROV_HTTP_FAILED;
            goto end;
        }
        resp->body = apr_palloc(r->pool, len + 1);
        memcpy(resp->body, body, len);
        resp->body[len] = '\0';
        resp->len = len;
        aiprov_wipe(body, len);
        aiprov_wipe_on_cleanup(r->pool, resp->body, len);
        ap_log_rerror(APLOG_MARK, APLOG_TRACE1, 0, r, "%s %s: HTTP %ld, %" APR_SIZE_T_FMT
                      " bytes", req->method, req->url, resp->status, len);
    }
end:
    aiprov_io_wipe_brigade(sink.bb);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    return result;
}
