/* Directives and per-directory configuration. */
#ifndef AIPROV_CONFIG_H
#define AIPROV_CONFIG_H

#include "aiprov.h"
#include "aiprov_crypto.h"
#include "aiprov_db.h"

/* Directive names, used by the table and by error messages alike. */
#define AIPROV_DIR_KEYFILE          "AIProvEncryptionKeyFile"
#define AIPROV_DIR_SESSION_QUERY    "AIProvSessionQuery"
#define AIPROV_DIR_TRUST_REMOTE     "AIProvTrustRemoteUser"
#define AIPROV_DIR_OR_AUTH_URL      "AIProvOpenRouterAuthURL"
#define AIPROV_DIR_OR_EXCHANGE_URL  "AIProvOpenRouterExchangeURL"
#define AIPROV_DIR_PROVIDER_URL     "AIProvProviderURL"
#define AIPROV_DIR_UPSTREAM_TIMEOUT "AIProvUpstreamTimeout"
#define AIPROV_DIR_VERIFY_KEYS     "AIProvVerifyKeys"

#define AIPROV_UNSET (-1)

/* The providers, in the order of the contract. */
typedef enum {
    AIPROV_P_OPENROUTER = 0,
    AIPROV_P_OPENAI,
    AIPROV_P_ANTHROPIC,
    AIPROV_P_OLLAMA,
    AIPROV_P_GROQ,
    AIPROV_P_GEMINI,
    AIPROV_P_COHERE,
    AIPROV_P_COUNT
} aiprov_provider_e;

typedef struct {
    const char *name;          /* as stored and sent: "openrouter" */
    const char *display_name;  /* default keyLabel: "OpenRouter" */
    const char *key_prefix;    /* checked before storing; NULL: none */
    int needs_key;             /* ollama: no */
    const char *default_url;   /* upstream base URL; NULL: the row's apiUrl */
} aiprov_provider_t;

extern const aiprov_provider_t aiprov_providers[AIPROV_P_COUNT];

/* Index of a provider name, or -1. */
int aiprov_provider_find(const char *name);

/*
 * Per-directory configuration. Members start unset (NULL or AIPROV_UNSET)
 * and the inner section wins at merge; defaults live in the getters, so a
 * merge never bakes a default in.
 */
typedef struct {
    const char *mount;                   /* the <Location> path: base of the API */
    const aiprov_keyring_t *keyring;     /* first key encrypts, all decrypt */
    const aiprov_sql_t *session_sql;     /* AIProvSessionQuery, NULL: per driver */
    int trust_remote_user;
    const char *openrouter_auth_url;
    const char *openrouter_exchange_url;
    const char *provider_url[AIPROV_P_COUNT];
    int upstream_timeout;                /* seconds */
    int verify_keys;                     /* ask the provider before storing a key */
} aiprov_dir_conf;

void *aiprov_config_create_dir(apr_pool_t *p, char *dir);
void *aiprov_config_merge_dir(apr_pool_t *p, void *basev, void *addv);
extern const command_rec aiprov_cmds[];

/* Reset state that lives from one configuration read to the next. */
void aiprov_config_pre_config(apr_pool_t *pconf);

/* Typed getters with the defaults. */
const aiprov_dir_conf *aiprov_config_get(const request_rec *r);
int aiprov_config_trust_remote_user(const aiprov_dir_conf *c);
const char *aiprov_config_openrouter_auth_url(const aiprov_dir_conf *c);
const char *aiprov_config_openrouter_exchange_url(const aiprov_dir_conf *c);
const char *aiprov_config_provider_url(const aiprov_dir_conf *c, int provider);
int aiprov_config_upstream_timeout(const aiprov_dir_conf *c, int fallback);
int aiprov_config_verify_keys(const aiprov_dir_conf *c);

#endif
