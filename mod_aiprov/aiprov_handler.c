/* The content handler: routes a request below the mount to its endpoint. */
#include "aiprov_handler.h"
#include "aiprov_identity.h"
#include "aiprov_io.h"
#include "aiprov_validate.h"

#include <http_core.h>
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

/* The length of path (trailing slashes ignored) when it is r->uri or a
 * parent of it; -1 when it is not. */
static int prefix_len(const request_rec *r, const char *path)
{
    apr_size_t len;

    if (!path || *path != '/') {
        return -1;
    }
    len = strlen(path);
    while (len > 0 && path[len - 1] == '/') {
        len--;
    }
    if (strncmp(r->uri, path, len) != 0 || (r->uri[len] != '\0' && r->uri[len] != '/')) {
        return -1;
    }
    return (int)len;
}

/*
 * The URL path the API is mounted at: the <Location> holding SetHandler
 * aiprov. httpd keeps the innermost section's path in core's configuration,
 * and ours has the innermost section with an AIProv directive; the shorter
 * of the two that the request lies below is the mount, so an inner section
 * with more AIProv settings does not move it. NULL: not in a <Location>.
 */
static const char *mount_of(request_rec *r, const aiprov_dir_conf *conf)
{
    const core_dir_config *core = ap_get_core_module_config(r->per_dir_config);
    int a = prefix_len(r, core->d), b = prefix_len(r, conf->mount);
    int len = a < 0 ? b : b < 0 ? a : a < b ? a : b;

    return len < 0 ? NULL : apr_pstrmemdup(r->pool, r->uri, (apr_size_t)len);
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

    if (!(q.mount = mount_of(r, q.conf))) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, AIPROV_LOGNO(00301)
                      "SetHandler aiprov belongs in a <Location> section");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    mlen = strlen(q.mount);

    if (!(route = match(&q, r->uri + mlen, &err))) {
        return aiprov_send_error(r, AIPROV_E_INVALID_REQUEST, "%s", err);
    }
    if (r->method_number == M_OPTIONS) {
        apr_table_setn(r->headers_out, "Allow", route->allow);
        apr_table_setn(r->headers_out, "Cache-Control", "no-store");
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
