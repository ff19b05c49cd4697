/* The content handler: routes a request below the mount to its endpoint. */
#ifndef AIPROV_HANDLER_H
#define AIPROV_HANDLER_H

#include "aiprov.h"
#include "aiprov_config.h"
#include "aiprov_db.h"

/* What every endpoint gets: the request, who asks, and the database. */
typedef struct {
    request_rec *r;
    const aiprov_dir_conf *conf;
    const char *mount;       /* the URL path the API is mounted at */
    const char *id;          /* the {id} of the path, lowercased, or NULL */
    const char *user;
    aiprov_db_t *db;
} aiprov_req_t;

int aiprov_handler(request_rec *r);

/* aiprov_api_providers.c */

/* Send the contract's sentence for a failure of aiprov_store_*(). */
int aiprov_api_store_error(aiprov_req_t *q, aiprov_err_e e);
int aiprov_api_list(aiprov_req_t *q);
int aiprov_api_create(aiprov_req_t *q);
int aiprov_api_get(aiprov_req_t *q);
int aiprov_api_update(aiprov_req_t *q);
int aiprov_api_delete(aiprov_req_t *q);

/* aiprov_api_proxy.c, aiprov_api_check.c */
int aiprov_api_proxy(aiprov_req_t *q);
int aiprov_api_models(aiprov_req_t *q);
int aiprov_api_verify(aiprov_req_t *q);

/* aiprov_api_openrouter.c */
int aiprov_api_openrouter_authorize(aiprov_req_t *q);
int aiprov_api_openrouter_exchange(aiprov_req_t *q);

#endif
