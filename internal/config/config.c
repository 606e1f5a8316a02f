/* config.c — the public entry points: load a file or a string through libyaml's document API, free,
 * look-ups, and the handling of secrets (registration for log masking, the masked Redis URL). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_int.h"

/* Line and column (1-based, in characters) of byte offset off of text. */
static void offset_to_mark(const char *text, size_t len, size_t off, size_t *line, size_t *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && i < len; i++) {
        if (text[i] == '\n')
            *line += 1, *col = 1;
        else if (((unsigned char)text[i] & 0xc0) != 0x80)
            *col += 1;
    }
}

/* Reports a libyaml parse error as "FILE:LINE:COL: syntax error: ...". */
static void syntax_error(cfg_ctx_t *c, const yaml_parser_t *parser, const char *text, size_t len)
{
    const char *problem = parser->problem ? parser->problem : "cannot parse";
    size_t line = parser->problem_mark.line + 1, col = parser->problem_mark.column + 1;
    if (parser->error == YAML_READER_ERROR) /* the reader reports a byte offset, not a mark */
        offset_to_mark(text, len, parser->problem_offset, &line, &col);
    if (parser->context)
        snprintf(c->err, c->errlen, "%s:%zu:%zu: syntax error: %s (%s at line %zu)", c->name, line, col,
                 problem, parser->context, parser->context_mark.line + 1);
    else
        snprintf(c->err, c->errlen, "%s:%zu:%zu: syntax error: %s", c->name, line, col, problem);
    c->failed = true;
}

/* Loads the only document of the stream and walks it; a second document is an error. */
static int load_documents(cfg_ctx_t *c, yaml_parser_t *parser, const char *text, size_t len)
{
    yaml_document_t doc, extra;
    if (!yaml_parser_load(parser, &doc)) {
        syntax_error(c, parser, text, len);
        return -1;
    }
    c->doc = &doc;
    int rc = -1;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root && !cfg_is_null(root) && root->type != YAML_MAPPING_NODE) {
        cfg_fail(c, root, "", "the top level must be a mapping of sections (kafka, redis, llm, ...)");
        goto out;
    }
    if (root && cfg_walk(c, root, "", cfg_root_fields, cfg_n_root_fields, c->cfg) < 0)
        goto out;
    if (root) {
        if (!yaml_parser_load(parser, &extra)) {
            syntax_error(c, parser, text, len);
            goto out;
        }
        bool more = yaml_document_get_root_node(&extra) != NULL;
        if (more)
            snprintf(c->err, c->errlen, "%s:%zu:%zu: only one YAML document is allowed", c->name,
                     extra.start_mark.line + 1, extra.start_mark.column + 1);
        yaml_document_delete(&extra);
        if (more) {
            c->failed = true;
            goto out;
        }
    }
    rc = cfg_finish(c);
out:
    yaml_document_delete(&doc);
    c->doc = NULL;
    return rc;
}

config_t *config_load_string(const char *yaml, size_t len, const char *name, char *err, size_t errlen)
{
    static char no_err[1];
    cfg_ctx_t c = {
        .name = name ? name : "<string>", .err = errlen ? err : no_err, .errlen = errlen ? errlen : 1};
    buf_init(&c.text, 0);
    c.err[0] = '\0';
    yaml_parser_t parser;
    bool parser_ready = false;
    config_t *cfg = base_calloc(1, sizeof *cfg);
    if (!cfg || !(cfg->source = base_strdup(c.name)) || cfg_defaults(cfg) < 0) {
        cfg_oom(&c);
        goto out;
    }
    c.cfg = cfg;
    if (len > CFG_INPUT_MAX) {
        snprintf(c.err, c.errlen, "%s: larger than %u bytes", c.name, CFG_INPUT_MAX);
        c.failed = true;
        goto out;
    }
    if (!yaml_parser_initialize(&parser)) {
        cfg_oom(&c);
        goto out;
    }
    parser_ready = true;
    if (!yaml)
        yaml = "", len = 0;
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    load_documents(&c, &parser, yaml, len);
out:
    if (parser_ready)
        yaml_parser_delete(&parser);
    buf_free(&c.text);
    if (c.failed) {
        config_free(cfg);
        return NULL;
    }
    return cfg;
}

config_t *config_load_file(const char *path, char *err, size_t errlen)
{
    char *data = NULL;
    size_t len = 0;
    config_t *cfg = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    if (!(data = base_malloc(CFG_INPUT_MAX + 1))) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto out;
    }
    len = fread(data, 1, CFG_INPUT_MAX + 1, f);
    if (ferror(f)) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        goto out;
    }
    cfg = config_load_string(data, len, path, err, errlen);
out:
    free(data);
    fclose(f);
    return cfg;
}

static void free_kv(config_kv_t *kv, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(kv[i].key);
        free(kv[i].value);
    }
    free(kv);
}

void config_free(config_t *cfg)
{
    if (!cfg)
        return;
    free(cfg->source);
    free(cfg->kafka.brokers);
    free(cfg->kafka.group_id);
    free(cfg->kafka.jobs_topic);
    free(cfg->kafka.reply_topic);
    free(cfg->kafka.dlq_topic);
    for (size_t i = 0; i < cfg->kafka.n_reply_topics_allowed; i++)
        free(cfg->kafka.reply_topics_allowed[i]);
    free(cfg->kafka.reply_topics_allowed);
    free_kv(cfg->kafka.properties, cfg->kafka.n_properties);
    free(cfg->redis.url.value);
    free(cfg->redis.key_prefix);
    free(cfg->redis.ca_file);
    for (size_t i = 0; i < cfg->llm.n_providers; i++) {
        config_provider_t *p = &cfg->llm.providers[i];
        free(p->name);
        free(p->base_url);
        free(p->api_key.value);
        free(p->model);
        free(p->ca_file);
        free(p->anthropic_version);
        free_kv(p->headers, p->n_headers);
    }
    free(cfg->llm.providers);
    for (size_t i = 0; i < cfg->llm.n_routes; i++) {
        free(cfg->llm.routes[i].name);
        free(cfg->llm.routes[i].providers);
        free(cfg->llm.routes[i].weights);
        free(cfg->llm.routes[i].system);
    }
    free(cfg->llm.routes);
    free(cfg->admin.listen);
    free(cfg);
}

const config_route_t *config_route_find(const config_t *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->llm.n_routes; i++)
        if (strcmp(cfg->llm.routes[i].name, name) == 0)
            return &cfg->llm.routes[i];
    return NULL;
}

const config_provider_t *config_provider_find(const config_t *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->llm.n_providers; i++)
        if (strcmp(cfg->llm.providers[i].name, name) == 0)
            return &cfg->llm.providers[i];
    return NULL;
}

const char *config_strategy_name(strategy_t s)
{
    return (unsigned)s <= STRATEGY_FALLBACK ? cfg_strategy_names[s] : "unknown";
}

const char *config_provider_type_name(provider_type_t t)
{
    return (unsigned)t <= PROVIDER_ANTHROPIC ? cfg_provider_type_names[t] : "unknown";
}

bool cfg_name_is_secret(const char *name)
{
    static const char *const words[] = {
        "password", "passwd",  "secret", "token",    "authorization",     "cookie",
        "api-key",  "api_key", "apikey", ".key.pem", "oauthbearer.config"};
    for (size_t i = 0; i < BASE_ARRAY_LEN(words); i++)
        if (strcasestr(name, words[i]))
            return true;
    return false;
}

bool cfg_url_password(const char *url, size_t *start, size_t *len)
{
    const char *auth = strstr(url, "://");
    if (!auth)
        return false;
    auth += 3;
    size_t alen = strcspn(auth, "/?#");
    const char *at = NULL;
    for (const char *p = auth; p < auth + alen; p++)
        if (*p == '@')
            at = p;
    if (!at || at == auth)
        return false;
    const char *colon = memchr(auth, ':', (size_t)(at - auth));
    const char *pw = colon ? colon + 1 : auth;
    if (pw == at)
        return false;
    *start = (size_t)(pw - url);
    *len = (size_t)(at - pw);
    return true;
}

int config_redis_url_masked(const config_t *cfg, char *out, size_t outlen)
{
    const char *url = secret_reveal(&cfg->redis.url);
    size_t start, len;
    int n = cfg_url_password(url, &start, &len)
                ? snprintf(out, outlen, "%.*s%s%s", (int)start, url, SECRET_MASK, url + start + len)
                : snprintf(out, outlen, "%s", url);
    return n >= 0 && (size_t)n < outlen ? 0 : -1;
}

/* Registers value when key names a secret. */
static void register_kv(const config_kv_t *kv, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (cfg_name_is_secret(kv[i].key))
            log_register_secret(kv[i].value);
}

void config_register_secrets(const config_t *cfg)
{
    for (size_t i = 0; i < cfg->llm.n_providers; i++) {
        log_register_secret(cfg->llm.providers[i].api_key.value);
        register_kv(cfg->llm.providers[i].headers, cfg->llm.providers[i].n_headers);
    }
    register_kv(cfg->kafka.properties, cfg->kafka.n_properties);
    const char *url = secret_reveal(&cfg->redis.url);
    size_t start, len;
    if (cfg_url_password(url, &start, &len)) {
        char *pw = base_strndup(url + start, len);
        log_register_secret(pw);
        free(pw);
    }
}
