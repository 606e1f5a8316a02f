/* config_node.c — reading libyaml document nodes against the schema tables: typed scalars, mappings
 * checked for unknown and duplicate keys, and error messages "FILE:LINE:COL: key.path: what". */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_int.h"

#define CFG_SUGGEST_MAX 64 /* words longer than this get no did-you-mean */
#define CFG_ECHO_MAX    40 /* how much of a bad value a message quotes */

_Static_assert(sizeof(strategy_t) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(provider_type_t) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(log_level_t) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(log_format_t) == sizeof(int), "enums are stored as int");

int cfg_fail(cfg_ctx_t *c, const yaml_node_t *n, const char *path, const char *fmt, ...)
{
    if (c->failed)
        return -1;
    c->failed = true;
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    unsigned long line = n ? (unsigned long)n->start_mark.line + 1 : 1;
    unsigned long col = n ? (unsigned long)n->start_mark.column + 1 : 1;
    snprintf(c->err, c->errlen, "%s:%lu:%lu: %s%s%s", c->name, line, col, path, *path ? ": " : "", what);
    for (char *p = c->err; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    return -1;
}

int cfg_oom(cfg_ctx_t *c) { return cfg_fail(c, NULL, "", "out of memory"); }

/* A path cut at CFG_PATH_MAX ends in "...". */
static void path_cut(char *out, int n)
{
    if (n >= CFG_PATH_MAX)
        memcpy(out + CFG_PATH_MAX - 4, "...", 4);
}

void cfg_path(char *out, const char *parent, const char *key)
{
    path_cut(out, snprintf(out, CFG_PATH_MAX, "%s%s%s", parent, *parent ? "." : "", key));
}

void cfg_path_index(char *out, const char *parent, size_t i)
{
    path_cut(out, snprintf(out, CFG_PATH_MAX, "%s[%zu]", parent, i));
}

/* Optimal string alignment distance (edits and adjacent transpositions); both lengths <= CFG_SUGGEST_MAX. */
static size_t edit_distance(const char *a, size_t la, const char *b, size_t lb)
{
    size_t rows[3][CFG_SUGGEST_MAX + 1];
    size_t *pp = rows[0], *prev = rows[1], *cur = rows[2];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = prev[j] + 1;
            if (cur[j - 1] + 1 < best)
                best = cur[j - 1] + 1;
            if (prev[j - 1] + cost < best)
                best = prev[j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && pp[j - 2] + 1 < best)
                best = pp[j - 2] + 1;
            cur[j] = best;
        }
        size_t *t = pp;
        pp = prev;
        prev = cur;
        cur = t;
    }
    return prev[lb];
}

const char *cfg_suggest(const char *word, const char *const *cands, size_t n)
{
    size_t lw = strlen(word);
    if (lw == 0 || lw > CFG_SUGGEST_MAX)
        return NULL;
    size_t limit = lw < 3 ? 1 : (lw + 2) / 3;
    const char *best = NULL;
    size_t best_d = limit + 1;
    for (size_t i = 0; i < n; i++) {
        size_t lc = strlen(cands[i]);
        if (lc > CFG_SUGGEST_MAX)
            continue;
        size_t d = edit_distance(word, lw, cands[i], lc);
        if (d < best_d && d < lw && d < lc) {
            best_d = d;
            best = cands[i];
        }
    }
    return best;
}

yaml_node_t *cfg_node(cfg_ctx_t *c, int id) { return yaml_document_get_node(c->doc, id); }

bool cfg_is_null(const yaml_node_t *n)
{
    if (!n || n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};
    for (size_t i = 0; i < BASE_ARRAY_LEN(nulls); i++)
        if (strcmp((const char *)n->data.scalar.value, nulls[i]) == 0)
            return true;
    return false;
}

static const char *type_name(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_SCALAR_NODE:
        return "a scalar";
    case YAML_SEQUENCE_NODE:
        return "a list";
    case YAML_MAPPING_NODE:
        return "a mapping";
    default:
        return "nothing";
    }
}

int cfg_expect(cfg_ctx_t *c, yaml_node_t *n, const char *path, yaml_node_type_t type)
{
    if (n->type == type)
        return 0;
    const char *want = type == YAML_MAPPING_NODE    ? "a mapping"
                       : type == YAML_SEQUENCE_NODE ? "a list"
                                                    : "a scalar";
    return cfg_fail(c, n, path, "expected %s, got %s", want, type_name(n));
}

/* The written text of a scalar, cut and made printable, for quoting in a message. */
static void echo(const yaml_node_t *n, char *out, size_t outlen)
{
    const char *s = (const char *)n->data.scalar.value;
    size_t len = strnlen(s, CFG_ECHO_MAX);
    snprintf(out, outlen, "%.*s%s", (int)len, s, s[len] ? "..." : "");
}

const char *cfg_scalar(cfg_ctx_t *c, yaml_node_t *n, const char *path, const char *what)
{
    if (n->type != YAML_SCALAR_NODE) {
        cfg_fail(c, n, path, "expected %s, got %s", what, type_name(n));
        return NULL;
    }
    const char *s = (const char *)n->data.scalar.value;
    size_t len = n->data.scalar.length;
    if (memchr(s, '\0', len)) {
        cfg_fail(c, n, path, "contains a NUL character");
        return NULL;
    }
    buf_reset(&c->text);
    char why[256];
    if (buf_append(&c->text, "", 0) < 0) {
        cfg_oom(c);
        return NULL;
    }
    if (!cfg_is_null(n) && cfg_expand(s, len, &c->text, why, sizeof why) < 0) {
        cfg_fail(c, n, path, "%s", why);
        return NULL;
    }
    return c->text.data;
}

const char *cfg_key_text(cfg_ctx_t *c, yaml_node_t *key, const char *path)
{
    if (key->type != YAML_SCALAR_NODE) {
        cfg_fail(c, key, path, "a key must be a string, got %s", type_name(key));
        return NULL;
    }
    const char *s = (const char *)key->data.scalar.value;
    if (memchr(s, '\0', key->data.scalar.length) || key->data.scalar.length > CFG_KEY_MAX) {
        cfg_fail(c, key, path, "a key must be a string of at most %d bytes without NUL", CFG_KEY_MAX);
        return NULL;
    }
    return s;
}

typedef struct {
    const char *key;
    size_t idx;
} key_ref_t;

static int key_ref_cmp(const void *a, const void *b)
{
    const key_ref_t *x = a, *y = b;
    int r = strcmp(x->key, y->key);
    return r ? r : (x->idx > y->idx) - (x->idx < y->idx);
}

/* Reports the first (in document order) duplicate or, when fields is given, unknown key of map. */
static int scan_keys(cfg_ctx_t *c, yaml_node_t *map, const char *path, const cfg_field_t *fields, size_t n,
                     key_ref_t *refs, size_t np)
{
    yaml_node_pair_t *pairs = map->data.mapping.pairs.start;
    char sub[CFG_PATH_MAX];
    for (size_t i = 0; i < np; i++) {
        const char *k = cfg_key_text(c, cfg_node(c, pairs[i].key), path);
        if (!k)
            return -1;
        refs[i] = (key_ref_t){.key = k, .idx = i};
    }
    qsort(refs, np, sizeof *refs, key_ref_cmp);
    size_t dup = np, prev_of_dup = 0;
    for (size_t j = 1; j < np; j++)
        if (strcmp(refs[j - 1].key, refs[j].key) == 0 && refs[j].idx < dup) {
            dup = refs[j].idx;
            prev_of_dup = refs[j - 1].idx;
        }
    const char *names[64];
    size_t nn = n < BASE_ARRAY_LEN(names) ? n : BASE_ARRAY_LEN(names);
    for (size_t i = 0; i < nn; i++)
        names[i] = fields[i].key;
    for (size_t i = 0; i < np; i++) {
        yaml_node_t *kn = cfg_node(c, pairs[i].key);
        const char *k = (const char *)kn->data.scalar.value;
        cfg_path(sub, path, k);
        if (i == dup) {
            yaml_node_t *first = cfg_node(c, pairs[prev_of_dup].key);
            return cfg_fail(c, kn, sub, "duplicate key (also at line %lu)",
                            (unsigned long)first->start_mark.line + 1);
        }
        if (!fields)
            continue;
        size_t f = 0;
        while (f < n && strcmp(fields[f].key, k) != 0)
            f++;
        if (f < n)
            continue;
        const char *hint = cfg_suggest(k, names, nn);
        if (hint)
            return cfg_fail(c, kn, sub, "unknown key (did you mean \"%s\"?)", hint);
        char list[320] = "";
        size_t used = 0;
        for (size_t j = 0; j < nn && used < sizeof list; j++) {
            int w = snprintf(list + used, sizeof list - used, "%s%s", j ? ", " : "", names[j]);
            used += w > 0 ? (size_t)w : 0;
        }
        return cfg_fail(c, kn, sub, "unknown key (expected one of: %s)", list);
    }
    return 0;
}

int cfg_check_map(cfg_ctx_t *c, yaml_node_t *map, const char *path, const cfg_field_t *fields, size_t n,
                  size_t limit)
{
    size_t np = (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
    if (limit && np > limit)
        return cfg_fail(c, map, path, "too many entries (%zu, at most %zu)", np, limit);
    if (np == 0)
        return 0;
    key_ref_t *refs = base_calloc(np, sizeof *refs);
    if (!refs)
        return cfg_oom(c);
    int rc = scan_keys(c, map, path, fields, n, refs, np);
    free(refs);
    return rc;
}

yaml_node_t *cfg_map_get(cfg_ctx_t *c, yaml_node_t *map, const char *key)
{
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = cfg_node(c, p->key);
        if (k->type == YAML_SCALAR_NODE && strcmp((const char *)k->data.scalar.value, key) == 0)
            return cfg_node(c, p->value);
    }
    return NULL;
}

int cfg_i64(cfg_ctx_t *c, yaml_node_t *n, const char *path, int64_t lo, int64_t hi, int64_t *out)
{
    const char *s = cfg_scalar(c, n, path, "an integer");
    if (!s)
        return -1;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    bool digits_only = (*s == '-' || *s == '+' || (*s >= '0' && *s <= '9')) && end != s && *end == '\0';
    if (!digits_only || errno == ERANGE) {
        char e[64];
        echo(n, e, sizeof e);
        return cfg_fail(c, n, path, "expected an integer, got \"%s\"", e);
    }
    if (v < lo || v > hi)
        return cfg_fail(c, n, path, "must be between %lld and %lld, got %lld", (long long)lo, (long long)hi,
                        v);
    *out = (int64_t)v;
    return 0;
}

int cfg_num(cfg_ctx_t *c, yaml_node_t *n, const char *path, double lo, double hi, double *out)
{
    const char *s = cfg_scalar(c, n, path, "a number");
    if (!s)
        return -1;
    char *end = NULL;
    double v = strtod(s, &end);
    bool plain = strspn(s, "0123456789+-.eE") == strlen(s);
    if (!plain || end == s || *end != '\0' || !isfinite(v)) {
        char e[64];
        echo(n, e, sizeof e);
        return cfg_fail(c, n, path, "expected a number, got \"%s\"", e);
    }
    if (v < lo || v > hi)
        return cfg_fail(c, n, path, "must be between %g and %g, got %g", lo, hi, v);
    *out = v;
    return 0;
}

static int parse_bool(cfg_ctx_t *c, yaml_node_t *n, const char *path, bool *out)
{
    const char *s = cfg_scalar(c, n, path, "true or false");
    if (!s)
        return -1;
    if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0)
        *out = true;
    else if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0)
        *out = false;
    else {
        char e[64];
        echo(n, e, sizeof e);
        return cfg_fail(c, n, path, "expected true or false, got \"%s\"", e);
    }
    return 0;
}

static int parse_enum(cfg_ctx_t *c, yaml_node_t *n, const char *path, const char *const *names, int *out)
{
    const char *s = cfg_scalar(c, n, path, "a name");
    if (!s)
        return -1;
    size_t count = 0;
    while (names[count])
        count++;
    for (size_t i = 0; i < count; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (int)i;
            return 0;
        }
    char list[160] = "";
    size_t used = 0;
    for (size_t i = 0; i < count && used < sizeof list; i++) {
        int w = snprintf(list + used, sizeof list - used, "%s%s",
                         i == 0           ? ""
                         : i + 1 == count ? " or "
                                          : ", ",
                         names[i]);
        used += w > 0 ? (size_t)w : 0;
    }
    char e[64];
    echo(n, e, sizeof e);
    const char *hint = cfg_suggest(s, names, count);
    if (hint)
        return cfg_fail(c, n, path, "expected %s, got \"%s\" (did you mean \"%s\"?)", list, e, hint);
    return cfg_fail(c, n, path, "expected %s, got \"%s\"", list, e);
}

/* Reads a string value; with allow_empty false an empty one is an error. *out is a fresh copy or NULL. */
static int parse_string(cfg_ctx_t *c, const cfg_field_t *f, yaml_node_t *n, const char *path,
                        bool allow_empty, char **out)
{
    const char *s = cfg_scalar(c, n, path, "a string");
    if (!s)
        return -1;
    if (!*s && !allow_empty)
        return cfg_fail(c, n, path, "must not be empty");
    const char *bad = f->check ? f->check(s) : NULL;
    if (bad)
        return cfg_fail(c, n, path, "%s", bad);
    *out = NULL;
    if (*s && !(*out = base_strdup(s)))
        return cfg_oom(c);
    return 0;
}

static int parse_list(cfg_ctx_t *c, const cfg_field_t *f, yaml_node_t *n, const char *path, void *base)
{
    if (cfg_is_null(n))
        return 0;
    if (cfg_expect(c, n, path, YAML_SEQUENCE_NODE) < 0)
        return -1;
    size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (f->limit && count > f->limit)
        return cfg_fail(c, n, path, "too many entries (%zu, at most %zu)", count, f->limit);
    char **items = base_calloc(count, sizeof *items);
    if (!items)
        return cfg_oom(c);
    *(char ***)((char *)base + f->off) = items;
    size_t *np = (size_t *)((char *)base + f->off_n);
    for (size_t i = 0; i < count; i++) {
        char sub[CFG_PATH_MAX];
        cfg_path_index(sub, path, i);
        if (parse_string(c, f, cfg_node(c, n->data.sequence.items.start[i]), sub, false, &items[i]) < 0)
            return -1;
        *np = i + 1;
    }
    return 0;
}

static int parse_kv(cfg_ctx_t *c, const cfg_field_t *f, yaml_node_t *n, const char *path, void *base)
{
    if (cfg_is_null(n))
        return 0;
    if (cfg_expect(c, n, path, YAML_MAPPING_NODE) < 0 || cfg_check_map(c, n, path, NULL, 0, f->limit) < 0)
        return -1;
    size_t count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    config_kv_t *kv = base_calloc(count, sizeof *kv);
    if (!kv)
        return cfg_oom(c);
    *(config_kv_t **)((char *)base + f->off) = kv;
    size_t *np = (size_t *)((char *)base + f->off_n);
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *kn = cfg_node(c, n->data.mapping.pairs.start[i].key);
        const char *k = (const char *)kn->data.scalar.value;
        char sub[CFG_PATH_MAX];
        cfg_path(sub, path, k);
        const char *bad = f->key_check ? f->key_check(k) : NULL;
        if (bad)
            return cfg_fail(c, kn, sub, "%s", bad);
        if (!*k)
            return cfg_fail(c, kn, sub, "a key must not be empty");
        if (!(kv[i].key = base_strdup(k)))
            return cfg_oom(c);
        *np = i + 1;
        if (parse_string(c, f, cfg_node(c, n->data.mapping.pairs.start[i].value), sub, true, &kv[i].value) <
            0)
            return -1;
        if (!kv[i].value && !(kv[i].value = base_strdup("")))
            return cfg_oom(c);
    }
    return 0;
}

/* Parses one field's value node into base. */
static int parse_field(cfg_ctx_t *c, const cfg_field_t *f, yaml_node_t *n, const char *path, void *base)
{
    void *p = (char *)base + f->off;
    int64_t v = 0;
    int e = 0;
    switch (f->kind) {
    case CF_STR:
    case CF_STR_OPT: {
        char *s = NULL;
        if (parse_string(c, f, n, path, f->kind == CF_STR_OPT, &s) < 0)
            return -1;
        free(*(char **)p);
        *(char **)p = s;
        return 0;
    }
    case CF_SECRET: {
        char *s = NULL;
        if (parse_string(c, f, n, path, true, &s) < 0)
            return -1;
        free(((secret_t *)p)->value);
        ((secret_t *)p)->value = s;
        return 0;
    }
    case CF_INT:
        if (cfg_i64(c, n, path, (int64_t)f->min, (int64_t)f->max, &v) < 0)
            return -1;
        *(int *)p = (int)v;
        return 0;
    case CF_I64:
        return cfg_i64(c, n, path, (int64_t)f->min, (int64_t)f->max, (int64_t *)p);
    case CF_NUM:
        return cfg_num(c, n, path, f->min, f->max, (double *)p);
    case CF_BOOL:
        return parse_bool(c, n, path, (bool *)p);
    case CF_ENUM:
        if (parse_enum(c, n, path, f->names, &e) < 0)
            return -1;
        *(int *)p = e;
        return 0;
    case CF_LIST:
        return parse_list(c, f, n, path, base);
    case CF_KV:
        return parse_kv(c, f, n, path, base);
    case CF_SECTION:
        if (cfg_walk(c, n, path, f->sub, f->n_sub, p) < 0)
            return -1;
        return f->fn ? f->fn(c, n, path, p) : 0;
    case CF_CUSTOM:
        return f->fn(c, n, path, base);
    }
    return -1;
}

int cfg_walk(cfg_ctx_t *c, yaml_node_t *map, const char *path, const cfg_field_t *fields, size_t n,
             void *base)
{
    bool empty = cfg_is_null(map);
    if (!empty &&
        (cfg_expect(c, map, path, YAML_MAPPING_NODE) < 0 || cfg_check_map(c, map, path, fields, n, 0) < 0))
        return -1;
    for (size_t i = 0; i < n; i++) {
        char sub[CFG_PATH_MAX];
        cfg_path(sub, path, fields[i].key);
        yaml_node_t *v = empty ? NULL : cfg_map_get(c, map, fields[i].key);
        if (!v) {
            if (fields[i].required)
                return cfg_fail(c, map, sub, "missing required key");
            continue;
        }
        if (parse_field(c, &fields[i], v, sub, base) < 0)
            return -1;
    }
    return 0;
}
