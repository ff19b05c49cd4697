/*
 * mod_aiprov: users connect and manage their own AI providers.
 * The module record and its hooks; each concern has a file of its own.
 */
#define AIPROV_MODULE_FILE
#include "aiprov.h"
#include "aiprov_config.h"
#include "aiprov_db.h"
#include "aiprov_handler.h"
#include "aiprov_http.h"
#include "aiprov_io.h"

#include <http_request.h>

static int aiprov_pre_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp)
{
    aiprov_config_pre_config(pconf);
    return OK;
}

static int aiprov_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                              server_rec *s)
{
    aiprov_db_retrieve_functions();
    aiprov_http_global_init(s->process->pool);
    if (!aiprov_db_available()) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, AIPROV_LOGNO(00001)
                     "mod_dbd is not loaded: every API request will answer "
                     "DATABASE_UNAVAILABLE");
    }
    return OK;
}

static void aiprov_child_init(apr_pool_t *pchild, server_rec *s)
{
    aiprov_http_child_init(pchild);
}

static void aiprov_register_hooks(apr_pool_t *p)
{
    ap_hook_child_init(aiprov_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_pre_config(aiprov_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(aiprov_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(aiprov_handler, NULL, NULL, APR_HOOK_MIDDLE);
    aiprov_io_register_hooks(p);
}

AP_DECLARE_MODULE(aiprov) = {
    STANDARD20_MODULE_STUFF,
    aiprov_config_create_dir,
    aiprov_config_merge_dir,
    NULL,
    NULL,
    aiprov_cmds,
    aiprov_register_hooks,
    AP_MODULE_FLAG_NONE
};
