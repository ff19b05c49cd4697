/* What every call to a provider shares: where it goes, how the key rides,
 * and what of the provider's answer may be shown. */
#include "aiprov_upstream.h"
#include "aiprov_crypto.h"

#include <apr_lib.h>

const char *aiprov_upstream_base(apr_pool_t *p, const aiprov_dir_conf *conf, int provider,
                                 const char *api_url)
{
    const char *base = aiprov_config_provider_url(conf, provider);
    apr_size_t len;

    if (!base) {
        base = api_url;   /* Ollama: where the user runs it */
    }
    if (!base) {
        return NULL;
    }
    len = strlen(base);
    while (len > 0 && base[len - 1] == '/') {
        len--;
    }
    return apr_pstrmemdup(p, base, len);
}

static void add_secret_header(apr_pool_t *p, apr_array_header_t *headers, const char *name,
                              const char *value)
{
    char *h = apr_pstrcat(p, name, ": ", value, NULL);
    aiprov_wipe_on_cleanup(p, h, strlen(h));
    APR_ARRAY_PUSH(headers, const char *) = h;
}

void aiprov_upstream_auth(apr_pool_t *p, int provider, const char *key,
                          apr_array_header_t *headers)
{
    if (provider == AIPROV_P_ANTHROPIC) {
        APR_ARRAY_PUSH(headers, const char *) = "anthropic-version: 2023-06-01";
    }
    if (!key) {
        return;
    }
    switch (provider) {
    case AIPROV_P_ANTHROPIC:
        add_secret_header(p, headers, "x-api-key", key);
        break;
    case AIPROV_P_GEMINI:
        /* Google's own header; its OpenAI-compatible API reads the bearer */
        add_secret_header(p, headers, "x-goog-api-key", key);
        add_secret_header(p, headers, "Authorization", apr_pstrcat(p, "Bearer ", key, NULL));
        break;
    default:
        add_secret_header(p, headers, "Authorization", apr_pstrcat(p, "Bearer ", key, NULL));
        break;
    }
}

aiprov_err_e aiprov_upstream_key(apr_pool_t *p, const aiprov_dir_conf *conf,
                                 const aiprov_row_t *row, char **key, apr_size_t *len)
{
    *key = NULL;
    *len = 0;
    if (!row->api_key) {
        return AIPROV_OK;
    }
    if (!conf->keyring
        || aiprov_decrypt(p, conf->keyring, row->api_key, key, len) != APR_SUCCESS) {
        return AIPROV_E_ENCRYPTION_FAILED;
    }
    return AIPROV_OK;
}

/* base without a trailing suffix, e.g. ".../v1beta/openai" -> ".../v1beta" */
static const char *strip_suffix(apr_pool_t *p, const char *base, const char *suffix)
{
    apr_size_t bl = strlen(base), sl = strlen(suffix);
    if (bl >= sl && strcmp(base + bl - sl, suffix) == 0) {
        return apr_pstrmemdup(p, base, bl - sl);
    }
    return base;
}

aiprov_http_result_e aiprov_upstream_verify(request_rec *r, const aiprov_dir_conf *conf,
                                            int provider, const char *api_url,
                                            const char *key, aiprov_http_resp_t *resp)
{
    aiprov_http_req_t req;
    const char *base = aiprov_upstream_base(r->pool, conf, provider, api_url);
    apr_array_header_t *headers = apr_array_make(r->pool, 4, sizeof(const char *));

    if (!base) {
        memset(resp, 0, sizeof(*resp));
        return AIPROV_HTTP_FAILED;
    }
    memset(&req, 0, sizeof(req));
    req.method = "GET";
    req.headers = headers;
    req.timeout = aiprov_config_upstream_timeout(conf, AIPROV_VERIFY_TIMEOUT_DEFAULT);
    req.max_response = AIPROV_CHECK_RESPONSE_MAX;
    APR_ARRAY_PUSH(headers, const char *) = "Accept: application/json";

    switch (provider) {
    case AIPROV_P_OPENROUTER:          /* the key's own limit and usage */
        req.url = apr_pstrcat(r->pool, base, "/key", NULL);
        aiprov_upstream_auth(r->pool, provider, key, headers);
        break;
    case AIPROV_P_GEMINI:              /* never ?key=: keys stay out of URLs */
        req.url = apr_pstrcat(r->pool, strip_suffix(r->pool, base, "/openai"), "/models",
                              NULL);
        if (key) {
            add_secret_header(r->pool, headers, "x-goog-api-key", key);
        }
        break;
    case AIPROV_P_COHERE:
        req.method = "POST";
        req.body = "";
        req.url = apr_pstrcat(r->pool, strip_suffix(r->pool, base, "/compatibility/v1"),
                              "/v1/check-api-key", NULL);
        aiprov_upstream_auth(r->pool, provider, key, headers);
        break;
    case AIPROV_P_OLLAMA:
        req.url = apr_pstrcat(r->pool, base, "/api/version", NULL);
        aiprov_upstream_auth(r->pool, provider, key, headers);
        break;
    default:                           /* OpenAI, Anthropic, Groq: the model list */
        req.url = apr_pstrcat(r->pool, base, "/models", NULL);
        aiprov_upstream_auth(r->pool, provider, key, headers);
        break;
    }
    return aiprov_http_fetch(r, &req, resp);
}

/* Prefixes of the keys providers hand out, as they appear in error texts. */
static const char *const key_prefixes[] = { "sk-", "sk_", "gsk_", "AIza", "AQ.", NULL };

static int key_char(char c)
{
    return apr_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '*';
}

char *aiprov_upstream_mask(apr_pool_t *p, const char *text, apr_size_t len,
                           const char *key, apr_size_t *out_len)
{
    char *out = apr_palloc(p, len + 1);
    apr_size_t i = 0, o = 0, klen = key ? strlen(key) : 0;
    int k;

    while (i < len) {
        int start = i == 0 || !key_char(text[i - 1]);
        apr_size_t m = 0;
        /* the key, or its first 8 or more characters (providers quote a start) */
        while (m < klen && i + m < len && text[i + m] == key[m]) {
            m++;
        }
        if (m >= 8) {
            memcpy(out + o, "***", 3);
            o += 3;
            i += m;
            continue;
        }
        for (k = 0; start && key_prefixes[k]; k++) {
            apr_size_t pl = strlen(key_prefixes[k]), j;
            if (len - i > pl && memcmp(text + i, key_prefixes[k], pl) == 0) {
                for (j = i + pl; j < len && key_char(text[j]); j++)
                    ;
                if (j - i - pl >= 4) {   /* a prefix alone is just a word */
                    memcpy(out + o, text + i, pl);
                    o += pl;
                    memcpy(out + o, "***", 3);
                    o += 3;
                    i = j;
                    break;
                }
            }
        }
        if (start && key_prefixes[k]) {
            continue;
        }
        out[o++] = text[i++];
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}
