/* Directives and per-directory configuration. */
#include "aiprov_config.h"

#include <http_core.h>
#include <apr_uri.h>

const aiprov_provider_t aiprov_providers[AIPROV_P_COUNT] = {
    { "openrouter", "OpenRouter", "sk-or-",  1, "https://openrouter.ai/api/v1" },
    { "openai",     "OpenAI",     "sk-",     1, "https://api.openai.com/v1" },
    { "anthropic",  "Anthropic",  "sk-ant-", 1, "https://api.anthropic.com/v1" },
    { "ollama",     "Ollama",     NULL,      0, NULL },
    { "groq",       "Groq",       "gsk_",    1, "https://api.groq.com/openai/v1" },
    /* Gemini changed its key format (AIza… then AQ.…): no prefix check. */
    { "gemini",     "Gemini",     NULL,      1,
      "https://generativelanguage.googleapis.com/v1beta/openai" },
    { "cohere",     "Cohere",     NULL,      1, "https://api.cohere.ai/compatibility/v1" },
};

int aiprov_provider_find(const char *name)
{
    int i;
    for (i = 0; i < AIPROV_P_COUNT; i++) {
        if (strcmp(aiprov_providers[i].name, name) == 0) {
            return i;
        }
    }
    return -1;
}

/* Labels of AIProvSessionQuery statements: unique within one configuration. */
static int session_query_count;

void aiprov_config_pre_config(apr_pool_t *pconf)
{
    session_query_count = 0;
}

void *aiprov_config_create_dir(apr_pool_t *p, char *dir)
{
    aiprov_dir_conf *c = apr_pcalloc(p, sizeof(*c));
    c->mount = dir ? apr_pstrdup(p, dir) : NULL;
    c->trust_remote_user = AIPROV_UNSET;
    c->upstream_timeout = AIPROV_UNSET;
    c->verify_keys = AIPROV_UNSET;
    return c;
}

#define MERGE_PTR(m) (add->m ? add->m : base->m)
#define MERGE_INT(m) (add->m != AIPROV_UNSET ? add->m : base->m)

void *aiprov_config_merge_dir(apr_pool_t *p, void *basev, void *addv)
{
    const aiprov_dir_conf *base = basev, *add = addv;
    aiprov_dir_conf *c = apr_pcalloc(p, sizeof(*c));
    int i;

    c->mount = MERGE_PTR(mount);
    c->keyring = MERGE_PTR(keyring);
    c->session_sql = MERGE_PTR(session_sql);
    c->trust_remote_user = MERGE_INT(trust_remote_user);
    c->openrouter_auth_url = MERGE_PTR(openrouter_auth_url);
    c->openrouter_exchange_url = MERGE_PTR(openrouter_exchange_url);
    for (i = 0; i < AIPROV_P_COUNT; i++) {
        c->provider_url[i] = MERGE_PTR(provider_url[i]);
    }
    c->upstream_timeout = MERGE_INT(upstream_timeout);
    c->verify_keys = MERGE_INT(verify_keys);
    return c;
}

const aiprov_dir_conf *aiprov_config_get(const request_rec *r)
{
    return ap_get_module_config(r->per_dir_config, &aiprov_module);
}

int aiprov_config_trust_remote_user(const aiprov_dir_conf *c)
{
    return c->trust_remote_user == 1;
}

const char *aiprov_config_openrouter_auth_url(const aiprov_dir_conf *c)
{
    return c->openrouter_auth_url ? c->openrouter_auth_url : "https://openrouter.ai/auth";
}

const char *aiprov_config_openrouter_exchange_url(const aiprov_dir_conf *c)
{
    return c->openrouter_exchange_url ? c->openrouter_exchange_url
                                      : "https://openrouter.ai/api/v1/auth/keys";
}

const char *aiprov_config_provider_url(const aiprov_dir_conf *c, int provider)
{
    return c->provider_url[provider] ? c->provider_url[provider]
                                     : aiprov_providers[provider].default_url;
}

int aiprov_config_upstream_timeout(const aiprov_dir_conf *c, int fallback)
{
    return c->upstream_timeout != AIPROV_UNSET ? c->upstream_timeout : fallback;
}

int aiprov_config_verify_keys(const aiprov_dir_conf *c)
{
    return c->verify_keys == 1;
}

/* ------------------------------------------------------------ setters */

/* An absolute http(s) URL with a host: anything else is a typo. */
static const char *check_http_url(cmd_parms *cmd, const char *url)
{
    apr_uri_t uri;
    if (apr_uri_parse(cmd->temp_pool, url, &uri) != APR_SUCCESS
        || !uri.scheme || !uri.hostname || !*uri.hostname
        || (strcasecmp(uri.scheme, "http") != 0 && strcasecmp(uri.scheme, "https") != 0)) {
        return apr_psprintf(cmd->pool, "%s: '%s' is not an http:// or https:// URL",
                            cmd->directive->directive, url);
    }
    return NULL;
}

static const char *set_keyfiles(cmd_parms *cmd, void *dconf, int argc, char *const argv[])
{
    aiprov_dir_conf *c = dconf;
    const char *err;
    aiprov_keyring_t *ring;

    if (argc < 1) {
        return AIPROV_DIR_KEYFILE " takes one or more key files";
    }
    err = aiprov_keyring_load(cmd->pool, cmd->temp_pool, argc, argv, &ring);
    if (err) {
        return apr_pstrcat(cmd->pool, AIPROV_DIR_KEYFILE ": ", err, NULL);
    }
    c->keyring = ring;
    return NULL;
}

static const char *set_session_query(cmd_parms *cmd, void *dconf, const char *query)
{
    aiprov_dir_conf *c = dconf;
    aiprov_sql_t *sql;
    const char *p;
    int params = 0;

    /* exactly one %s: the bearer token; other % must be escaped as %% */
    for (p = query; (p = strchr(p, '%')) != NULL; p += 2) {
        if (p[1] == 's') {
            params++;
        }
        else if (p[1] != '%') {
            return AIPROV_DIR_SESSION_QUERY ": only %s (the token) and %% may follow a %";
        }
    }
    if (params != 1) {
        return AIPROV_DIR_SESSION_QUERY ": the query must have exactly one %s, for the token";
    }
    sql = apr_pcalloc(cmd->pool, sizeof(*sql));
    sql->label = apr_psprintf(cmd->pool, "aiprov_session_%d", ++session_query_count);
    sql->sqlite = sql->pgsql = apr_pstrdup(cmd->pool, query);
    c->session_sql = sql;
    return NULL;
}

static const char *set_flag(cmd_parms *cmd, void *dconf, int on)
{
    /* cmd->info: the member's offset in aiprov_dir_conf */
    *(int *)((char *)dconf + (apr_size_t)cmd->info) = on ? 1 : 0;
    return NULL;
}

static const char *set_openrouter_url(cmd_parms *cmd, void *dconf, const char *url)
{
    aiprov_dir_conf *c = dconf;
    const char *err = check_http_url(cmd, url);
    if (err) {
        return err;
    }
    if (cmd->info == (void *)1) {
        c->openrouter_exchange_url = url;
    }
    else {
        c->openrouter_auth_url = url;
    }
    return NULL;
}

static const char *set_provider_url(cmd_parms *cmd, void *dconf, const char *name,
                                    const char *url)
{
    aiprov_dir_conf *c = dconf;
    const char *err;
    int i = aiprov_provider_find(name);
    apr_size_t len;

    if (i < 0) {
        return apr_psprintf(cmd->pool, AIPROV_DIR_PROVIDER_URL ": unknown provider '%s' "
                            "(openrouter, openai, anthropic, ollama, groq, gemini, cohere)",
                            name);
    }
    if ((err = check_http_url(cmd, url)) != NULL) {
        return err;
    }
    /* paths are appended to it: keep exactly one slash between */
    len = strlen(url);
    while (len > 0 && url[len - 1] == '/') {
        len--;
    }
    c->provider_url[i] = apr_pstrmemdup(cmd->pool, url, len);
    return NULL;
}

static const char *set_upstream_timeout(cmd_parms *cmd, void *dconf, const char *arg)
{
    aiprov_dir_conf *c = dconf;
    char *end;
    apr_int64_t v = apr_strtoi64(arg, &end, 10);

    if (*arg == '\0' || *end != '\0' || v < 1 || v > 86400) {
        return apr_psprintf(cmd->pool, AIPROV_DIR_UPSTREAM_TIMEOUT ": '%s' is not a number "
                            "of seconds from 1 to 86400", arg);
    }
    c->upstream_timeout = (int)v;
    return NULL;
}

/* Never in .htaccess: key files are secrets and URLs are where keys go. */
#define AIPROV_SCOPE (RSRC_CONF | ACCESS_CONF)

const command_rec aiprov_cmds[] = {
    AP_INIT_TAKE_ARGV(AIPROV_DIR_KEYFILE, set_keyfiles, NULL, AIPROV_SCOPE,
        "Files holding base64 of 32 random bytes (mode 0600); the first encrypts, "
        "all are tried to decrypt"),
    AP_INIT_TAKE1(AIPROV_DIR_SESSION_QUERY, set_session_query, NULL, AIPROV_SCOPE,
        "SQL mapping a bearer token (the one %s) to a user id (first column)"),
    AP_INIT_FLAG(AIPROV_DIR_TRUST_REMOTE, set_flag,
        (void *)APR_OFFSETOF(aiprov_dir_conf, trust_remote_user), AIPROV_SCOPE,
        "On: the user set by another auth module (REMOTE_USER) is the user id"),
    AP_INIT_FLAG(AIPROV_DIR_VERIFY_KEYS, set_flag,
        (void *)APR_OFFSETOF(aiprov_dir_conf, verify_keys), AIPROV_SCOPE,
        "On: a new key is checked with the provider, and refused if it rejects it"),
    AP_INIT_TAKE1(AIPROV_DIR_OR_AUTH_URL, set_openrouter_url, (void *)0, AIPROV_SCOPE,
        "OpenRouter's authorization page"),
    AP_INIT_TAKE1(AIPROV_DIR_OR_EXCHANGE_URL, set_openrouter_url, (void *)1, AIPROV_SCOPE,
        "OpenRouter's code-for-key endpoint"),
    AP_INIT_TAKE2(AIPROV_DIR_PROVIDER_URL, set_provider_url, NULL, AIPROV_SCOPE,
        "A provider name and its upstream base URL"),
    AP_INIT_TAKE1(AIPROV_DIR_UPSTREAM_TIMEOUT, set_upstream_timeout, NULL, AIPROV_SCOPE,
        "Connect and total timeout of outbound calls, in seconds"),
    { NULL }
};
