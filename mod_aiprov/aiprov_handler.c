/* The content handler: routes a request below the mount to its endpoint. */
#include "aiprov_handler.h"
#include "aiprov_identity.h"
#include "aiprov_io.h"
#include "aiprov_validate.h"

#include <http_protocol.h>
#include <http_request.h>

typedef int (*aiprov_endpoint_fn)(aiprov_req_t *q);

/* The methods of one path: NULL where the method is not allowed; any takes
 * every method (the proxy). */
typedef struct {
    const char *allow;          /* the Allow header */
    aiprov_endpoint_fn get, post, put, delete, any;
} aiprov_route_t;

static const aiprov_route_t route_collection = {
    .allow = "GET, POST, OPTIONS", .get = aiprov_api_list, .post = aiprov_api_create
};
static const aiprov_route_t route_authorize = {
    .allow = "POST, OPTIONS", .post = aiprov_api_openrouter_authorize
};
static const aiprov_route_t route_exchange = {
    .allow = "POST, OPTIONS", .post = aiprov_api_openrouter_exchange
};
static const aiprov_route_t route_item = {
    .allow = "GET, PUT, DELETE, OPTIONS", .get = aiprov_api_get, .put = aiprov_api_update,
    .delete = aiprov_api_delete
};
static const aiprov_route_t route_models = {
    .allow = "GET, OPTIONS", .get = aiprov_api_models
};
static const aiprov_route_t route_verify = {
    .allow = "POST, OPTIONS", .post = aiprov_api_verify
};
static const aiprov_route_t route_proxy = {
    .allow = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS", .any = aiprov_api_proxy
};

/* The route of the path below the mount; sets q->id. NULL: no such endpoint. */
static const aiprov_route_t *match(aiprov_req_t *q, const char *rest, const char **err)
{
    const char *seg, *sub;

    if (*rest == '\0' || strcmp(rest, "/") == 0) {
        return &route_collection;
    }
    if (*rest != '/') {
        return NULL;
    }
    if (strcmp(rest, "/openrouter/authorize") == 0) {
        return &route_authorize;
    }
    if (strcmp(rest, "/openrouter/exchange") == 0) {
        return &route_exchange;
    }
    /* /{id}, /{id}/models, /{id}/verify, /{id}/proxy[/…] */
    seg = rest + 1;
    sub = strchr(seg, '/');
    q->id = sub ? apr_pstrmemdup(q->r->pool, seg, (apr_size_t)(sub - seg))
                : apr_pstrdup(q->r->pool, seg);
    if (!aiprov_is_uuid(q->id)) {
        *err = "the provider id in the path is not a UUID";
        return NULL;
    }
    ap_str_tolower((char *)q->id);
    if (!sub) {
        return &route_item;
    }
    if (strcmp(sub, "/models") == 0) {
        return &route_models;
    }
    if (strcmp(sub, "/verify") == 0) {
        return &route_verify;
    }
    if (strcmp(sub, "/proxy") == 0 || strncmp(sub, "/proxy/", 7) == 0) {
        return &route_proxy;
    }
    *err = "unknown endpoint";
    return NULL;
}

static aiprov_endpoint_fn method_fn(const aiprov_route_t *route, int method)
{
    if (route->any) {
        return route->any;
    }
    switch (method) {
    case M_GET:    return route->get;
    case M_POST:   return route->post;
    case M_PUT:    return route->put;
    case M_DELETE: return route->delete;
    default:       return NULL;
    }
}

int aiprov_handler(request_rec *r)
{
    aiprov_req_t q;
    const aiprov_route_t *route;
    aiprov_endpoint_fn fn;
    const char *err = "unknown endpoint";
    apr_size_t mlen;
    aiprov_err_e e = AIPROV_OK;

    if (!r->handler || strcmp(r->handler, AIPROV_HANDLER) != 0) {
        return DECLINED;
    }
    memset(&q, 0, sizeof(q));
    q.r = r;
    q.conf = aiprov_config_get(r);
    q.mount = q.conf->mount;
    aiprov_io_json_errors(r);

    /* the API lives below the <Location> that holds SetHandler aiprov */
    mlen = q.mount ? strlen(q.mount) : 0;
    while (mlen > 0 && q.mount[mlen - 1] == '/') {
        mlen--;
    }
    if (!q.mount || *q.mount != '/' || strncmp(r->uri, q.mount, mlen) != 0) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, AIPROV_LOGNO(00301)
                      "SetHandler aiprov belongs in a <Location> section");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    q.mount = apr_pstrmemdup(r->pool, q.mount, mlen);

    if (!(route = match(&q, r->uri + mlen, &err))) {
        return aiprov_send_error(r, AIPROV_E_INVALID_REQUEST, "%s", err);
    }
    if (r->method_number == M_OPTIONS) {
        apr_table_setn(r->headers_out, "Allow", route->allow);
        r->status = HTTP_NO_CONTENT;
        return OK;
    }
    if (!(fn = method_fn(route, r->method_number))) {
        apr_table_setn(r->err_headers_out, "Allow", route->allow);
        return aiprov_send_error(r, AIPROV_E_METHOD_NOT_ALLOWED,
                                 "%s is not allowed here: use %s", r->method, route->allow);
    }

    /* no credentials at all: no need to ask the database */
    if (!(aiprov_config_trust_remote_user(q.conf) && r->user)
        && !apr_table_get(r->headers_in, "Authorization")) {
        return aiprov_send_error(r, AIPROV_E_UNAUTHORIZED, "a session is required");
    }
    /* the proxy gives its connection back while it waits for the provider */
    if (!(q.db = route->any ? aiprov_db_open(r) : aiprov_db_acquire(r))) {
        return aiprov_send_error(r, AIPROV_E_DATABASE_UNAVAILABLE,
                                 "the database is unavailable");
    }
    if (!(q.user = aiprov_identity_user(r, q.conf, q.db, &e))) {
        return e == AIPROV_E_UNAUTHORIZED
               ? aiprov_send_error(r, e, "the session is missing, unknown or expired")
               : aiprov_send_error(r, e, "the database is unavailable");
    }
    return fn(&q);
}
