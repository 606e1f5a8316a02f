/* config — the YAML configuration file turned into one typed, validated config_t.
 * It owns: ${VAR} / ${VAR:-default} expansion from the environment, the defaults of every key
 * (CONTRACT.md §4 plus the keys added in README "Configuration"), validation (types, ranges,
 * enums, unique provider names, routes naming existing providers, unknown keys rejected with a
 * did-you-mean), error messages of the form "FILE:LINE:COL: KEY.PATH: what is wrong", and the
 * masked YAML dump that `parley check-config` prints.
 * It never logs, never exits, and never shows a secret: API keys and the Redis URL's password
 * live in secret_t and print as ***. */
#ifndef PARLEY_CONFIG_H
#define PARLEY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/base.h"
#include "log/log.h"

typedef enum { STRATEGY_RACE = 0, STRATEGY_HEDGE, STRATEGY_FALLBACK } strategy_t;
typedef enum { PROVIDER_OPENAI = 0, PROVIDER_ANTHROPIC } provider_type_t;
/* auto: libcurl, HTTP/2 over https when the server offers it (ALPN), else HTTP/1.1; 1.1: libcurl,
 * HTTP/1.1 only; 2: parley's own HTTP/2 client (h2c with prior knowledge on http://, ALPN h2 on https://):
 * many calls per connection, a cancelled call resets its stream and keeps the connection. */
typedef enum { PROVIDER_HTTP_AUTO = 0, PROVIDER_HTTP_1_1, PROVIDER_HTTP_2 } provider_http_t;
/* hedge_order: which provider a hedge starts with — the route's order, or the lowest p99 latency. */
typedef enum { HEDGE_ORDER_ROUTE = 0, HEDGE_ORDER_LATENCY } hedge_order_t;

typedef struct {
    char *key;
    char *value;
} config_kv_t;

typedef struct {
    int failures;         /* consecutive failures that open the breaker (default 5) */
    double failure_ratio; /* or this ratio over window_s ... (default 0.5) */
    int window_s;         /* (default 30) */
    int min_requests;     /* ... with at least this many requests (default 20) */
    int cooldown_s;       /* open → half-open after this (default 30) */
} config_breaker_t;

typedef struct {
    char *name;
    provider_type_t type;
    char *base_url; /* e.g. https://api.openai.com/v1 — paths are appended */
    secret_t api_key;
    char *model;
    int64_t timeout_ms;             /* whole call (default llm.timeout_ms) */
    int64_t connect_timeout_ms;     /* default 10000 */
    int64_t first_token_timeout_ms; /* 0 = off (default) */
    int64_t idle_timeout_ms;        /* gap between stream chunks; 0 = off (default 30000) */
    int max_retries;                /* default 2 */
    int64_t retry_base_ms;          /* backoff base (default 200) */
    int64_t retry_max_ms;           /* backoff cap (default 5000) */
    int max_concurrency;            /* per process; 0 = unlimited (default) */
    int64_t rpm;                    /* fleet-wide requests/min; 0 = unlimited */
    int64_t tpm;                    /* fleet-wide tokens/min; 0 = unlimited */
    int64_t limit_wait_ms;          /* fallback waits this long for budget (default 1000) */
    config_breaker_t breaker;
    double price_input_per_mtok;  /* USD per million input tokens */
    double price_output_per_mtok; /* USD per million output tokens */
    bool price_set;
    provider_http_t http_version; /* default auto */
    bool tls_verify;              /* default true */
    char *ca_file;                /* NULL = system store */
    char *anthropic_version;      /* default "2023-06-01" */
    int64_t max_tokens_default;   /* anthropic needs max_tokens (default 1024) */
    double weight;                /* for weighted choice of the first provider (default 1) */
    config_kv_t *headers;         /* extra request headers */
    size_t n_headers;
} config_provider_t;

typedef struct {
    char *name;
    strategy_t strategy;
    size_t *providers; /* indexes into config_t.llm.providers, in the route's order */
    size_t n_providers;
    double *weights; /* NULL, or one per provider of the route */
    bool hedge_auto;
    int64_t hedge_delay_ms;    /* when !hedge_auto */
    hedge_order_t hedge_order; /* default route */
    int64_t hedge_min_ms;      /* clamp for auto (default 50) */
    int64_t hedge_max_ms;      /* (default 5000) */
    int64_t timeout_ms;        /* whole job's LLM stage (default llm.timeout_ms) */
    char *system;              /* route's system prompt, NULL when none */
} config_route_t;

typedef struct {
    char *source; /* the file name (or "<string>") */

    struct {
        char *brokers;
        char *group_id;
        char *jobs_topic;
        char *reply_topic;
        char *dlq_topic;
        char **reply_topics_allowed;
        size_t n_reply_topics_allowed;
        config_kv_t *properties; /* passed to librdkafka verbatim, after parley's defaults */
        size_t n_properties;
        int64_t max_message_bytes; /* default 1 MiB */
    } kafka;

    struct {
        secret_t url; /* redis://[user:password@]host:port/db, rediss://, unix:///path */
        char *key_prefix;
        int64_t idempotency_ttl_s;
        int64_t unavailable_timeout_ms; /* default 30000 */
        int64_t connect_timeout_ms;     /* default 2000 */
        int64_t command_timeout_ms;     /* default 5000 */
        char *ca_file;                  /* for rediss:// */
    } redis;

    struct {
        int64_t max_messages;
        int64_t max_len;
        int64_t ttl_s;
        bool append;
        int64_t max_entry_bytes; /* one history entry (default 64 KiB) */
    } history;

    struct {
        strategy_t strategy;
        bool hedge_auto;
        int64_t hedge_delay_ms;
        hedge_order_t hedge_order;
        int64_t hedge_min_ms;
        int64_t hedge_max_ms;
        int64_t timeout_ms;
        int64_t max_response_bytes; /* default 4 MiB */
        config_provider_t *providers;
        size_t n_providers;
        config_route_t *routes; /* always holds at least "default" */
        size_t n_routes;
    } llm;

    struct {
        int64_t max_in_flight;
        int64_t drain_timeout_ms;
    } worker;

    struct {
        bool enabled; /* false when listen is "" or "off" */
        char *listen; /* host:port */
    } admin;

    struct {
        log_level_t level;
        log_format_t format;
    } log;
} config_t;

/* Loads and validates a file. On error returns NULL and writes "FILE:LINE:COL: key.path: ..."
 * into err. */
config_t *config_load_file(const char *path, char *err, size_t errlen);
/* The same from a string; name stands for the file in messages. */
config_t *config_load_string(const char *yaml, size_t len, const char *name, char *err, size_t errlen);
void config_free(config_t *cfg);

/* Prints the effective config as YAML, every secret as ***. 0 on success. */
int config_dump(const config_t *cfg, FILE *out);

const config_route_t *config_route_find(const config_t *cfg, const char *name);
const config_provider_t *config_provider_find(const config_t *cfg, const char *name);
/* Writes redis.url with its password (or a userinfo without ':') replaced by ***: what logs may show.
 * 0, or -1 when out is too small. */
int config_redis_url_masked(const config_t *cfg, char *out, size_t outlen);
/* Registers every secret of cfg with log_register_secret: API keys, the Redis password, and the values
 * of headers and kafka.properties whose names look secret (password, secret, token, authorization...). */
void config_register_secrets(const config_t *cfg);

const char *config_strategy_name(strategy_t s);
const char *config_provider_type_name(provider_type_t t);

#endif
