/* What every call to a provider shares: where it goes, how the key rides,
 * and what of the provider's answer may be shown. */
#ifndef AIPROV_UPSTREAM_H
#define AIPROV_UPSTREAM_H

#include "aiprov.h"
#include "aiprov_config.h"
#include "aiprov_http.h"
#include "aiprov_store.h"

#define AIPROV_VERIFY_TIMEOUT_DEFAULT 30
#define AIPROV_CHECK_RESPONSE_MAX (4 * 1024 * 1024)

/* The base URL for a row: AIProvProviderURL, the public default, or the
 * row's apiUrl (Ollama); trailing slashes removed. NULL when there is none. */
const char *aiprov_upstream_base(apr_pool_t *p, const aiprov_dir_conf *conf, int provider,
                                 const char *api_url);

/* Add the headers that carry key (NULL: none) the provider's way. The header
 * text is wiped when p is cleared. */
void aiprov_upstream_auth(apr_pool_t *p, int provider, const char *key,
                          apr_array_header_t *headers);

/* The row's key decrypted into p (wiped at its cleanup); NULL key when the
 * row has none. AIPROV_E_ENCRYPTION_FAILED when it cannot be opened. */
aiprov_err_e aiprov_upstream_key(apr_pool_t *p, const aiprov_dir_conf *conf,
                                 const aiprov_row_t *row, char **key, apr_size_t *len);

/*
 * The provider's cheapest call that spends no tokens (a model list, or a key
 * check). *resp is the answer; the result as aiprov_http_fetch's.
 */
aiprov_http_result_e aiprov_upstream_verify(request_rec *r, const aiprov_dir_conf *conf,
                                            int provider, const char *api_url,
                                            const char *key, aiprov_http_resp_t *resp);

/* Replace key-shaped text, and key itself or any start of it of 8 or more
 * characters (if key is given), in text with "***". */
char *aiprov_upstream_mask(apr_pool_t *p, const char *text, apr_size_t len,
                           const char *key, apr_size_t *out_len);

#endif
