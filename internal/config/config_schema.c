/* config_schema.c — every key of the configuration: its type, range, default and checks, in one
 * table per mapping. The loader and the dump both walk these tables, so a key added here is parsed,
 * validated and printed. Fields are listed (and parsed) so that what a later field inherits from —
 * llm.timeout_ms for providers, llm.strategy for routes, the providers for route names — comes first. */
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_int.h"

#define MAX_PROVIDERS       64
#define MAX_ROUTES          256
#define MAX_ROUTE_PROVIDERS 64
#define MAX_HEADERS         64
#define MAX_PROPERTIES      512
#define MAX_TOPICS          1024
#define NAME_MAX_LEN        128
#define DAY_MS              86400000.0
#define TEN_YEARS_S         315360000.0

const char *const cfg_strategy_names[] = {"race", "hedge", "fallback", NULL};
const char *const cfg_provider_type_names[] = {"openai", "anthropic", NULL};
static const char *const http_version_names[] = {"auto", "1.1", "2", NULL};
static const char *const hedge_order_names[] = {"route", "latency", NULL};
static const char *const level_names[] = {"debug", "info", "warn", "error", NULL};
static const char *const format_names[] = {"json", "text", NULL};

/* ---- checks of string values ---- */

static bool all_of(const char *s, const char *extra)
{
    for (; *s; s++) {
        char ch = *s;
        bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        if (!alnum && !strchr(extra, ch))
            return false;
    }
    return true;
}

static const char *check_one_line(const char *s)
{
    for (; *s; s++)
        if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f)
            return "must not contain line breaks or control characters";
    return NULL;
}

static const char *check_name(const char *s)
{
    if (strlen(s) > NAME_MAX_LEN || !all_of(s, "._-"))
        return "a name is 1-128 characters of letters, digits, '.', '_' and '-'";
    return NULL;
}

static const char *check_topic(const char *s)
{
    if (strlen(s) > 249 || !all_of(s, "._-"))
        return "a Kafka topic name is 1-249 characters of letters, digits, '.', '_' and '-'";
    return NULL;
}

static const char *check_http_url(const char *s)
{
    const char *host = strncmp(s, "https://", 8) == 0 ? s + 8 : strncmp(s, "http://", 7) == 0 ? s + 7 : NULL;
    if (!host || !*host || *host == '/')
        return "must be an http:// or https:// URL with a host";
    if (strchr(s, ' '))
        return "a URL must not contain spaces";
    return check_one_line(s);
}

static const char *check_redis_url(const char *s)
{
    if (strncmp(s, "redis://", 8) != 0 && strncmp(s, "rediss://", 9) != 0 && strncmp(s, "unix://", 7) != 0)
        return "must be a redis://, rediss:// or unix:// URL";
    if (strncmp(s, "unix://", 7) == 0 && !strchr(s + 7, '/'))
        return "a unix:// URL needs a socket path (unix:///path/to/redis.sock)";
    if (strchr(s, ' '))
        return "a URL must not contain spaces";
    return check_one_line(s);
}

static const char *check_header_name(const char *s)
{
    if (!all_of(s, "!#$%&'*+-.^_`|~"))
        return "an HTTP header name is letters, digits and !#$%&'*+-.^_`|~";
    return NULL;
}

/* "host:port" (host may be [v6]); port 0 lets the system choose. */
static const char *check_listen(const char *s)
{
    const char *colon = strrchr(s, ':');
    const char *msg = "must be \"host:port\" (port 0-65535), or \"\" / \"off\" to disable";
    if (!colon || colon == s || !colon[1] || strlen(colon + 1) > 5 ||
        strspn(colon + 1, "0123456789") != strlen(colon + 1))
        return msg;
    if (strtol(colon + 1, NULL, 10) > 65535)
        return msg;
    if (*s == '[' && colon[-1] != ']')
        return msg;
    if (*s != '[' && memchr(s, ':', (size_t)(colon - s)))
        return "an IPv6 host must be written in brackets: \"[::1]:9090\"";
    return check_one_line(s);
}

/* ---- field macros ---- */

/* clang-format off */

#define STR(k, T, m, chk) {.key = k, .kind = CF_STR, .off = offsetof(T, m), .check = chk}
#define STR_REQ(k, T, m, chk) {.key = k, .kind = CF_STR, .required = true, .off = offsetof(T, m), .check = chk}
#define STR_OPT(k, T, m) {.key = k, .kind = CF_STR_OPT, .off = offsetof(T, m)}
#define SECRET(k, T, m) {.key = k, .kind = CF_SECRET, .off = offsetof(T, m)}
#define INT(k, T, m, lo, hi) {.key = k, .kind = CF_INT, .off = offsetof(T, m), .min = lo, .max = hi}
#define I64(k, T, m, lo, hi) {.key = k, .kind = CF_I64, .off = offsetof(T, m), .min = lo, .max = hi}
#define NUM(k, T, m, lo, hi) {.key = k, .kind = CF_NUM, .off = offsetof(T, m), .min = lo, .max = hi}
#define BOOL(k, T, m) {.key = k, .kind = CF_BOOL, .off = offsetof(T, m)}
#define ENUM(k, T, m, nm) {.key = k, .kind = CF_ENUM, .off = offsetof(T, m), .names = nm}
#define LIST(k, T, m, mn, chk, lim)                                                                            \
    {.key = k, .kind = CF_LIST, .off = offsetof(T, m), .off_n = offsetof(T, mn), .check = chk, .limit = lim}
#define KV(k, T, m, mn, kchk, vchk, lim)                                                                       \
    {.key = k, .kind = CF_KV, .off = offsetof(T, m), .off_n = offsetof(T, mn), .key_check = kchk,             \
     .check = vchk, .limit = lim}
#define SECTION(k, o, tbl, post)                                                                               \
    {.key = k, .kind = CF_SECTION, .off = o, .sub = tbl, .n_sub = BASE_ARRAY_LEN(tbl), .fn = post}
#define CUSTOM(k, parse, print) {.key = k, .kind = CF_CUSTOM, .fn = parse, .dump = print}
/* clang-format on */

/* ---- shared custom fields ---- */

/* hedge_delay_ms: a number of milliseconds, or auto. */
static int parse_hedge(cfg_ctx_t *c, yaml_node_t *n, const char *path, bool *is_auto, int64_t *delay)
{
    const char *s = cfg_scalar(c, n, path, "a number of milliseconds or auto");
    if (!s)
        return -1;
    if (strcmp(s, "auto") == 0) {
        *is_auto = true;
        return 0;
    }
    if (!*s || strspn(s, "+-0123456789") != strlen(s))
        return cfg_fail(c, n, path, "expected a number of milliseconds or auto");
    *is_auto = false;
    return cfg_i64(c, n, path, 0, (int64_t)DAY_MS, delay);
}

static void dump_hedge(cfg_out_t *o, const char *key, bool is_auto, int64_t delay)
{
    cfg_out_key(o, key);
    if (is_auto)
        fputs(" auto\n", o->f);
    else
        fprintf(o->f, " %" PRId64 "\n", delay);
}

/* hedge_min_ms <= hedge_max_ms, where map (a route or the llm section) sets one of them; what is only
 * inherited was checked where it was set. */
static int check_hedge_range(cfg_ctx_t *c, yaml_node_t *map, const char *path, int64_t lo, int64_t hi)
{
    if (lo <= hi || map->type != YAML_MAPPING_NODE)
        return 0;
    yaml_node_t *at = cfg_map_get(c, map, "hedge_max_ms");
    const char *key = at ? "hedge_max_ms" : "hedge_min_ms";
    if (!at && !(at = cfg_map_get(c, map, "hedge_min_ms")))
        return 0;
    char sub[CFG_PATH_MAX];
    cfg_path(sub, path, key);
    return cfg_fail(c, at, sub, "hedge_max_ms (%lld) must not be below hedge_min_ms (%lld)", (long long)hi,
                    (long long)lo);
}

/* ---- kafka, redis, history, worker, log ---- */

static const cfg_field_t kafka_fields[] = {
    STR("brokers", config_t, kafka.brokers, check_one_line),
    STR("group_id", config_t, kafka.group_id, check_one_line),
    STR("jobs_topic", config_t, kafka.jobs_topic, check_topic),
    STR("reply_topic", config_t, kafka.reply_topic, check_topic),
    STR("dlq_topic", config_t, kafka.dlq_topic, check_topic),
    LIST("reply_topics_allowed", config_t, kafka.reply_topics_allowed, kafka.n_reply_topics_allowed,
         check_topic, MAX_TOPICS),
    KV("properties", config_t, kafka.properties, kafka.n_properties, NULL, NULL, MAX_PROPERTIES),
    I64("max_message_bytes", config_t, kafka.max_message_bytes, 1, 1000000000),
};

static int parse_redis_url(cfg_ctx_t *c, yaml_node_t *n, const char *path, void *base)
{
    config_t *cfg = base;
    const char *s = cfg_scalar(c, n, path, "a string");
    if (!s)
        return -1;
    const char *bad = check_redis_url(s);
    if (bad)
        return cfg_fail(c, n, path, "%s", bad);
    char *copy = base_strdup(s);
    if (!copy)
        return cfg_oom(c);
    free(cfg->redis.url.value);
    cfg->redis.url.value = copy;
    return 0;
}

static void dump_redis_url(cfg_out_t *o, const cfg_field_t *f, const void *base)
{
    const config_t *cfg = base;
    char masked[1024];
    cfg_out_key(o, f->key);
    fputc(' ', o->f);
    if (config_redis_url_masked(cfg, masked, sizeof masked) == 0)
        cfg_out_str(o, masked, true);
    else
        cfg_out_str(o, SECRET_MASK, true);
    fputc('\n', o->f);
}

static const cfg_field_t redis_fields[] = {
    CUSTOM("url", parse_redis_url, dump_redis_url),
    STR("key_prefix", config_t, redis.key_prefix, check_one_line),
    I64("idempotency_ttl_s", config_t, redis.idempotency_ttl_s, 1, TEN_YEARS_S),
    I64("unavailable_timeout_ms", config_t, redis.unavailable_timeout_ms, 1, DAY_MS),
    I64("connect_timeout_ms", config_t, redis.connect_timeout_ms, 1, DAY_MS),
    I64("command_timeout_ms", config_t, redis.command_timeout_ms, 1, DAY_MS),
    STR_OPT("ca_file", config_t, redis.ca_file),
};

static const cfg_field_t history_fields[] = {
    I64("max_messages", config_t, history.max_messages, 0, 10000000),
    I64("max_len", config_t, history.max_len, 1, 10000000),
    I64("ttl_s", config_t, history.ttl_s, 1, TEN_YEARS_S),
    BOOL("append", config_t, history.append),
    I64("max_entry_bytes", config_t, history.max_entry_bytes, 1, 64 << 20),
};

static const cfg_field_t worker_fields[] = {
    I64("max_in_flight", config_t, worker.max_in_flight, 1, 1000000),
    I64("drain_timeout_ms", config_t, worker.drain_timeout_ms, 0, DAY_MS),
};

/* admin.listen: "host:port", or "" / "off" to turn the admin server off. */
static int parse_listen(cfg_ctx_t *c, yaml_node_t *n, const char *path, void *base)
{
    config_t *cfg = base;
    const char *s = cfg_scalar(c, n, path, "a string");
    if (!s)
        return -1;
    bool off = !*s || strcmp(s, "off") == 0;
    const char *bad = off ? NULL : check_listen(s);
    if (bad)
        return cfg_fail(c, n, path, "%s", bad);
    char *copy = base_strdup(off ? "" : s);
    if (!copy)
        return cfg_oom(c);
    free(cfg->admin.listen);
    cfg->admin.listen = copy;
    cfg->admin.enabled = !off;
    return 0;
}

static void dump_listen(cfg_out_t *o, const cfg_field_t *f, const void *base)
{
    const config_t *cfg = base;
    cfg_out_key(o, f->key);
    fputc(' ', o->f);
    cfg_out_str(o, cfg->admin.enabled ? cfg->admin.listen : "off", true);
    fputc('\n', o->f);
}

static const cfg_field_t admin_fields[] = {
    CUSTOM("listen", parse_listen, dump_listen),
};

static const cfg_field_t log_fields[] = {
    ENUM("level", config_t, log.level, level_names),
    ENUM("format", config_t, log.format, format_names),
};

/* ---- providers ---- */

static const cfg_field_t breaker_fields[] = {
    INT("failures", config_breaker_t, failures, 1, 1000000),
    NUM("failure_ratio", config_breaker_t, failure_ratio, 0, 1),
    INT("window_s", config_breaker_t, window_s, 1, 86400),
    INT("min_requests", config_breaker_t, min_requests, 1, 1000000),
    INT("cooldown_s", config_breaker_t, cooldown_s, 1, 86400),
};

static const cfg_field_t price_fields[] = {
    NUM("input_per_mtok", config_provider_t, price_input_per_mtok, 0, 1e6),
    NUM("output_per_mtok", config_provider_t, price_output_per_mtok, 0, 1e6),
};

/* price is set as soon as the mapping names one of its keys. */
static int price_post(cfg_ctx_t *c, yaml_node_t *n, const char *path, void *base)
{
    config_provider_t *p = base;
    p->price_set = n->type == YAML_MAPPING_NODE && n->data.mapping.pairs.top > n->data.mapping.pairs.start;
    return 0;
}

static void dump_price(cfg_out_t *o, const cfg_field_t *f, const void *base)
{
    const config_provider_t *p = base;
    cfg_out_key(o, f->key);
    if (!p->price_set) {
        fputs(" {}\n", o->f);
        return;
    }
    fputc('\n', o->f);
    o->indent += 2;
    cfg_out_fields(o, f->sub, f->n_sub, base);
    o->indent -= 2;
}

static const cfg_field_t provider_fields[] = {
    STR_REQ("name", config_provider_t, name, check_name),
    {.key = "type",
     .kind = CF_ENUM,
     .required = true,
     .off = offsetof(config_provider_t, type),
     .names = cfg_provider_type_names},
    STR_REQ("base_url", config_provider_t, base_url, check_http_url),
    SECRET("api_key", config_provider_t, api_key),
    STR_REQ("model", config_provider_t, model, check_one_line),
    I64("timeout_ms", config_provider_t, timeout_ms, 1, DAY_MS),
    I64("connect_timeout_ms", config_provider_t, connect_timeout_ms, 1, DAY_MS),
    I64("first_token_timeout_ms", config_provider_t, first_token_timeout_ms, 0, DAY_MS),
    I64("idle_timeout_ms", config_provider_t, idle_timeout_ms, 0, DAY_MS),
    INT("max_retries", config_provider_t, max_retries, 0, 100),
    I64("retry_base_ms", config_provider_t, retry_base_ms, 1, DAY_MS),
    I64("retry_max_ms", config_provider_t, retry_max_ms, 1, DAY_MS),
    INT("max_concurrency", config_provider_t, max_concurrency, 0, 1000000),
    I64("rpm", config_provider_t, rpm, 0, 1e9),
    I64("tpm", config_provider_t, tpm, 0, 1e12),
    I64("limit_wait_ms", config_provider_t, limit_wait_ms, 0, DAY_MS),
    SECTION("breaker", offsetof(config_provider_t, breaker), breaker_fields, NULL),
    {.key = "price",
     .kind = CF_SECTION,
     .sub = price_fields,
     .n_sub = BASE_ARRAY_LEN(price_fields),
     .fn = price_post,
     .dump = dump_price},
    ENUM("http_version", config_provider_t, http_version, http_version_names),
    BOOL("tls_verify", config_provider_t, tls_verify),
    STR_OPT("ca_file", config_provider_t, ca_file),
    STR("anthropic_version", config_provider_t, anthropic_version, check_one_line),
    I64("max_tokens_default", config_provider_t, max_tokens_default, 1, 10000000),
    NUM("weight", config_provider_t, weight, 0, 1e6),
    KV("headers", config_provider_t, headers, n_headers, check_header_name, check_one_line, MAX_HEADERS),
};

static int provider_defaults(const config_t *cfg, config_provider_t *p)
{
    *p = (config_provider_t){
        .timeout_ms = cfg->llm.timeout_ms,
        .connect_timeout_ms = 10000,
        .first_token_timeout_ms = 0,
        .idle_timeout_ms = 30000,
        .max_retries = 2,
        .retry_base_ms = 200,
        .retry_max_ms = 5000,
        .limit_wait_ms = 1000,
        .breaker =
            {.failures = 5, .failure_ratio = 0.5, .window_s = 30, .min_requests = 20, .cooldown_s = 30},
        .tls_verify = true,
        .max_tokens_default = 1024,
        .weight = 1,
    };
    p->anthropic_version = base_strdup("2023-06-01");
    return p->anthropic_version ? 0 : -1;
}

/* Checks across a provider's keys and against the providers before it; trims base_url's trailing '/'. */
static int provider_post(cfg_ctx_t *c, yaml_node_t *item, const char *path, size_t idx)
{
    config_provider_t *all = c->cfg->llm.providers, *p = &all[idx];
    char sub[CFG_PATH_MAX];
    for (size_t i = 0; i < idx; i++)
        if (strcmp(all[i].name, p->name) == 0) {
            cfg_path(sub, path, "name");
            return cfg_fail(c, cfg_map_get(c, item, "name"), sub,
                            "duplicate provider name \"%s\" (also %s[%zu])", p->name, "llm.providers", i);
        }
    if (p->retry_max_ms < p->retry_base_ms) {
        cfg_path(sub, path, "retry_max_ms");
        yaml_node_t *n = cfg_map_get(c, item, "retry_max_ms");
        return cfg_fail(c, n ? n : item, sub, "must not be below retry_base_ms");
    }
    size_t len = strlen(p->base_url);
    while (len > 0 && p->base_url[len - 1] == '/')
        p->base_url[--len] = '\0';
    return 0;
}

static int parse_providers(cfg_ctx_t *c, yaml_node_t *n, const char *path, void *base)
{
    config_t *cfg = base;
    if (cfg_is_null(n))
        return 0;
    if (cfg_expect(c, n, path, YAML_SEQUENCE_NODE) < 0)
        return -1;
    size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (count > MAX_PROVIDERS)
        return cfg_fail(c, n, path, "too many providers (%zu, at most %d)", count, MAX_PROVIDERS);
    if (!(cfg->llm.providers = base_calloc(count, sizeof *cfg->llm.providers)))
        return cfg_oom(c);
    for (size_t i = 0; i < count; i++) {
        config_provider_t *p = &cfg->llm.providers[i];
        cfg->llm.n_providers = i + 1;
        if (provider_defaults(cfg, p) < 0)
            return cfg_oom(c);
        char sub[CFG_PATH_MAX];
        cfg_path_index(sub, path, i);
        yaml_node_t *item = cfg_node(c, n->data.sequence.items.start[i]);
        if (cfg_walk(c, item, sub, provider_fields, BASE_ARRAY_LEN(provider_fields), p) < 0 ||
            provider_post(c, item, sub, i) < 0)
            return -1;
    }
    return 0;
}

static void dump_providers(cfg_out_t *o, const cfg_field_t *f, const void *base)
{
    const config_t *cfg = base;
    cfg_out_key(o, f->key);
    if (cfg->llm.n_providers == 0) {
        fputs(" []\n", o->f);
        return;
    }
    fputc('\n', o->f);
    o->indent += 4;
    for (size_t i = 0; i < cfg->llm.n_providers; i++) {
        o->dash = true;
        cfg_out_fields(o, provider_fields, BASE_ARRAY_LEN(provider_fields), &cfg->llm.providers[i]);
    }
    o->indent -= 4;
}

/* ---- routes ---- */

static int parse_route_providers(cfg_ctx_t *c, yaml_node_t *n, const char *path, void *base)
{
    config_route_t *r = base;
    const config_t *cfg = c->cfg;
    if (!cfg_is_null(n) && cfg_expect(c, n, path, YAML_SEQUENCE_NODE) < 0)
        return -1;
    size_t count = cfg_is_null(n) ? 0 : (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (count == 0)
        return cfg_fail(c, n, path, "a route needs at least one provider");
    if (count > MAX_ROUTE_PROVIDERS)
        return cfg_fail(c, n, path, "too many providers (%zu, at most %d)", count, MAX_ROUTE_PROVIDERS);
    if (!(r->providers = base_calloc(count, sizeof *r->providers)))
        return cfg_oom(c);
    const char *names[MAX_PROVIDERS];
    for (size_t i = 0; i < cfg->llm.n_providers; i++)
        names[i] = cfg->llm.providers[i].name;
    for (size_t i = 0; i < count; i++) {
        char sub[CFG_PATH_MAX];
        cfg_path_index(sub, path, i);
        yaml_node_t *item = cfg_node(c, n->data.sequence.items.start[i]);
        const char *s = cfg_scalar(c, item, sub, "a provider name");
        if (!s)
            return -1;
        size_t idx = 0;
        while (idx < cfg->llm.n_providers && strcmp(names[idx], s) != 0)
            idx++;
        if (idx == cfg->llm.n_providers) {
            const char *hint = cfg_suggest(s, names, cfg->llm.n_providers);
            if (hint)
                return cfg_fail(c, item, sub, "unknown provider \"%s\" (did you mean \"%s\"?)", s, hint);
            return cfg_fail(c, item, sub, "unknown provider \"%s\" (not in llm.providers)", s);
        }
        for (size_t j = 0; j < i; j++)
            if (r->providers[j] == idx)
                return cfg_fail(c, item, sub, "provider \"%s\" is listed twice", s);
        r->providers[i] = idx;
        r->n_providers = i + 1;
    }
    return 0;
}

static void dump_route_providers(cfg_out_t *o, const cfg_field_t *f, const void *base)
{
    const config_route_t *r = base;
    cfg_out_key(o, f->key);
    fputs(" [", o->f);
    for (size_t i = 0; i < r->n_providers; i++) {
        fputs(i ? ", " : "", o->f);
        cfg_out_str(o, o->cfg->llm.providers[r->providers[i]].name, true);
    }
    fputs("]\n", o->f);
}

/* weights: one number per provider of the route (or an empty list: none). */
static int parse_route_weights(cfg_ctx_t *c, yaml_node_t *n, const char *path, void *base)
{
    config_route_t *r = base;
    if (cfg_is_null(n))
        return 0;
    if (cfg_expect(c, n, path, YAML_SEQUENCE_NODE) < 0)
        return -1;
    size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (count == 0)
        return 0;
    if (count != r->n_providers)
        return cfg_fail(c, n, path, "expected %zu weights (one per provider of the route), got %zu",
                        r->n_providers, count);
    if (!(r->weights = base_calloc(count, sizeof *r->weights)))
        return cfg_oom(c);
    double sum = 0;
    for (size_t i = 0; i < count; i++) {
        char sub[CFG_PATH_MAX];
        cfg_path_index(sub, path, i);
        if (cfg_num(c, cfg_node(c, n->data.sequence.items.start[i]), sub, 0, 1e6, &r->weights[i]) < 0)
            return -1;
        sum += r->weights[i];
    }
    if (sum <= 0)
        return cfg_fail(c, n, path, "at least one weight must be above 0");
    return 0;
}

static void dump_route_weights(cfg_out_t *o, const cfg_field_t *f, const void *base)
{
    const config_route_t *r = base;
    cfg_out_key(o, f->key);
    fputs(" [", o->f);
    for (size_t i = 0; r->weights && i < r->n_providers; i++) {
        fputs(i ? ", " : "", o->f);
        cfg_out_num(o, r->weights[i]);
    }
    fputs("]\n", o->f);
}

static int parse_route_hedge(cfg_ctx_t *c, yaml_node_t *n, const char *path, void *base)
{
    config_route_t *r = base;
    return parse_hedge(c, n, path, &r->hedge_auto, &r->hedge_delay_ms);
}

static void dump_route_hedge(cfg_out_t *o, const cfg_field_t *f, const void *base)
{
    const config_route_t *r = base;
    dump_hedge(o, f->key, r->hedge_auto, r->hedge_delay_ms);
}

static const cfg_field_t route_fields[] = {
    ENUM("strategy", config_route_t, strategy, cfg_strategy_names),
    {.key = "providers",
     .kind = CF_CUSTOM,
     .required = true,
     .fn = parse_route_providers,
     .dump = dump_route_providers},
    CUSTOM("weights", parse_route_weights, dump_route_weights),
    CUSTOM("hedge_delay_ms", parse_route_hedge, dump_route_hedge),
    ENUM("hedge_order", config_route_t, hedge_order, hedge_order_names),
    I64("hedge_min_ms", config_route_t, hedge_min_ms, 0, DAY_MS),
    I64("hedge_max_ms", config_route_t, hedge_max_ms, 0, DAY_MS),
    I64("timeout_ms", config_route_t, timeout_ms, 1, DAY_MS),
    STR_OPT("system", config_route_t, system),
};

/* A route as the llm section's defaults make it, named name. */
static int route_defaults(const config_t *cfg, config_route_t *r, const char *name)
{
    *r = (config_route_t){
        .strategy = cfg->llm.strategy,
        .hedge_auto = cfg->llm.hedge_auto,
        .hedge_delay_ms = cfg->llm.hedge_delay_ms,
        .hedge_order = cfg->llm.hedge_order,
        .hedge_min_ms = cfg->llm.hedge_min_ms,
        .hedge_max_ms = cfg->llm.hedge_max_ms,
        .timeout_ms = cfg->llm.timeout_ms,
    };
    r->name = base_strdup(name);
    return r->name ? 0 : -1;
}

static int parse_routes(cfg_ctx_t *c, yaml_node_t *n, const char *path, void *base)
{
    config_t *cfg = base;
    if (cfg_is_null(n))
        return 0;
    if (cfg_expect(c, n, path, YAML_MAPPING_NODE) < 0 || cfg_check_map(c, n, path, NULL, 0, MAX_ROUTES) < 0)
        return -1;
    size_t count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    if (!(cfg->llm.routes = base_calloc(count + 1, sizeof *cfg->llm.routes))) /* + 1: room for "default" */
        return cfg_oom(c);
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *key = cfg_node(c, n->data.mapping.pairs.start[i].key);
        yaml_node_t *val = cfg_node(c, n->data.mapping.pairs.start[i].value);
        const char *name = (const char *)key->data.scalar.value;
        char sub[CFG_PATH_MAX];
        cfg_path(sub, path, name);
        const char *bad = *name ? check_name(name) : "a route name must not be empty";
        if (bad)
            return cfg_fail(c, key, sub, "%s", bad);
        config_route_t *r = &cfg->llm.routes[i];
        cfg->llm.n_routes = i + 1;
        if (route_defaults(cfg, r, name) < 0)
            return cfg_oom(c);
        if (cfg_is_null(val))
            return cfg_fail(c, val, sub, "a route needs at least \"providers\"");
        if (cfg_walk(c, val, sub, route_fields, BASE_ARRAY_LEN(route_fields), r) < 0 ||
            check_hedge_range(c, val, sub, r->hedge_min_ms, r->hedge_max_ms) < 0)
            return -1;
    }
    return 0;
}

static void dump_routes(cfg_out_t *o, const cfg_field_t *f, const void *base)
{
    const config_t *cfg = base;
    cfg_out_key(o, f->key);
    if (cfg->llm.n_providers == 0) { /* then the only route is the synthesized, empty default */
        fputs(" {}  # route \"default\" has no providers: llm.providers is empty\n", o->f);
        return;
    }
    fputc('\n', o->f);
    o->indent += 2;
    for (size_t i = 0; i < cfg->llm.n_routes; i++) {
        cfg_out_key(o, NULL);
        cfg_out_str(o, cfg->llm.routes[i].name, false);
        fputs(":\n", o->f);
        o->indent += 2;
        cfg_out_fields(o, route_fields, BASE_ARRAY_LEN(route_fields), &cfg->llm.routes[i]);
        o->indent -= 2;
    }
    o->indent -= 2;
}

/* ---- llm and the root ---- */

static int parse_llm_hedge(cfg_ctx_t *c, yaml_node_t *n, const char *path, void *base)
{
    config_t *cfg = base;
    return parse_hedge(c, n, path, &cfg->llm.hedge_auto, &cfg->llm.hedge_delay_ms);
}

static void dump_llm_hedge(cfg_out_t *o, const cfg_field_t *f, const void *base)
{
    const config_t *cfg = base;
    dump_hedge(o, f->key, cfg->llm.hedge_auto, cfg->llm.hedge_delay_ms);
}

/* After the llm section: llm.hedge_min_ms <= llm.hedge_max_ms. */
static int llm_hedge_range(cfg_ctx_t *c, yaml_node_t *n, const char *path, void *base)
{
    config_t *cfg = base;
    return check_hedge_range(c, n, path, cfg->llm.hedge_min_ms, cfg->llm.hedge_max_ms);
}

static const cfg_field_t llm_fields[] = {
    ENUM("strategy", config_t, llm.strategy, cfg_strategy_names),
    CUSTOM("hedge_delay_ms", parse_llm_hedge, dump_llm_hedge),
    ENUM("hedge_order", config_t, llm.hedge_order, hedge_order_names),
    I64("hedge_min_ms", config_t, llm.hedge_min_ms, 0, DAY_MS),
    I64("hedge_max_ms", config_t, llm.hedge_max_ms, 0, DAY_MS),
    I64("timeout_ms", config_t, llm.timeout_ms, 1, DAY_MS),
    I64("max_response_bytes", config_t, llm.max_response_bytes, 1, 1 << 30),
    CUSTOM("providers", parse_providers, dump_providers),
    CUSTOM("routes", parse_routes, dump_routes),
};

const cfg_field_t cfg_root_fields[] = {
    SECTION("kafka", 0, kafka_fields, NULL),     SECTION("redis", 0, redis_fields, NULL),
    SECTION("history", 0, history_fields, NULL), SECTION("llm", 0, llm_fields, llm_hedge_range),
    SECTION("worker", 0, worker_fields, NULL),   SECTION("admin", 0, admin_fields, NULL),
    SECTION("log", 0, log_fields, NULL),
};
const size_t cfg_n_root_fields = BASE_ARRAY_LEN(cfg_root_fields);

/* Sets every default that is not zero (CONTRACT.md §4 and config.h). */
int cfg_defaults(config_t *cfg)
{
    cfg->kafka.max_message_bytes = 1 << 20;
    cfg->redis.idempotency_ttl_s = 86400;
    cfg->redis.unavailable_timeout_ms = 30000;
    cfg->redis.connect_timeout_ms = 2000;
    cfg->redis.command_timeout_ms = 5000;
    cfg->history.max_messages = 20;
    cfg->history.max_len = 200;
    cfg->history.ttl_s = 604800;
    cfg->history.append = true;
    cfg->history.max_entry_bytes = 64 << 10;
    cfg->llm.strategy = STRATEGY_RACE;
    cfg->llm.hedge_auto = true;
    cfg->llm.hedge_min_ms = 50;
    cfg->llm.hedge_max_ms = 5000;
    cfg->llm.timeout_ms = 60000;
    cfg->llm.max_response_bytes = 4 << 20;
    cfg->worker.max_in_flight = 1000;
    cfg->worker.drain_timeout_ms = 30000;
    cfg->admin.enabled = true;
    cfg->log.level = LOG_INFO;
    cfg->log.format = LOG_FORMAT_JSON;
    struct {
        char **field;
        const char *value;
    } strs[] = {
        {&cfg->kafka.brokers, "localhost:9092"},  {&cfg->kafka.group_id, "parley"},
        {&cfg->kafka.jobs_topic, "chat.jobs"},    {&cfg->kafka.reply_topic, "chat.replies"},
        {&cfg->kafka.dlq_topic, "chat.jobs.dlq"}, {&cfg->redis.url.value, "redis://localhost:6379/0"},
        {&cfg->redis.key_prefix, "parley"},       {&cfg->admin.listen, "0.0.0.0:9090"},
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(strs); i++)
        if (!(*strs[i].field = base_strdup(strs[i].value)))
            return -1;
    return 0;
}

/* After the walk: without a route named "default", adds one with every provider, in order, and the llm
 * section's strategy, hedge settings and timeout. */
int cfg_finish(cfg_ctx_t *c)
{
    config_t *cfg = c->cfg;
    if (config_route_find(cfg, "default"))
        return 0;
    if (!cfg->llm.routes && !(cfg->llm.routes = base_calloc(1, sizeof *cfg->llm.routes)))
        return cfg_oom(c);
    config_route_t *r = &cfg->llm.routes[cfg->llm.n_routes];
    if (route_defaults(cfg, r, "default") < 0)
        return cfg_oom(c);
    cfg->llm.n_routes++;
    if (!(r->providers = base_calloc(cfg->llm.n_providers, sizeof *r->providers)))
        return cfg_oom(c);
    for (size_t i = 0; i < cfg->llm.n_providers; i++)
        r->providers[i] = i;
    r->n_providers = cfg->llm.n_providers;
    return 0;
}
