/* config_int.h — private to internal/config: the load context, the table-driven schema that both the
 * loader (config_node.c) and the dumper (config_dump.c) walk, and the helpers they share.
 * Nothing outside internal/config includes this file. */
#ifndef PARLEY_CONFIG_INT_H
#define PARLEY_CONFIG_INT_H

#include <yaml.h>

#include "config/config.h"

#define CFG_PATH_MAX   256        /* key paths in messages are cut here */
#define CFG_INPUT_MAX  (4u << 20) /* a config file larger than this is refused */
#define CFG_SCALAR_MAX (1u << 20) /* one value, after ${VAR} expansion */
#define CFG_KEY_MAX    256        /* one mapping key */

/* The state of one load. */
typedef struct {
    const char *name; /* the file name in messages */
    yaml_document_t *doc;
    config_t *cfg;
    char *err;
    size_t errlen;
    bool failed;
    buf_t text; /* the expanded text of the scalar read last */
} cfg_ctx_t;

typedef enum {
    CF_STR,     /* char *, not empty */
    CF_STR_OPT, /* char *, NULL when empty */
    CF_SECRET,  /* secret_t, NULL when empty */
    CF_INT,     /* int in [min, max] */
    CF_I64,     /* int64_t in [min, max] */
    CF_NUM,     /* double in [min, max] */
    CF_BOOL,    /* bool */
    CF_ENUM,    /* an enum (int-sized) whose values index names */
    CF_LIST,    /* char ** at off, size_t count at off_n */
    CF_KV,      /* config_kv_t * at off, size_t count at off_n */
    CF_SECTION, /* a mapping of sub fields at base + off; fn (if any) runs after them */
    CF_CUSTOM,  /* fn parses, dump prints */
} cfg_kind_t;

typedef struct cfg_field cfg_field_t;
typedef struct cfg_out cfg_out_t;

/* Parses node (the value of the field) into base. 0, or -1 after cfg_fail. */
typedef int (*cfg_parse_fn)(cfg_ctx_t *c, yaml_node_t *node, const char *path, void *base);
/* Prints the field of base. */
typedef void (*cfg_dump_fn)(cfg_out_t *o, const cfg_field_t *f, const void *base);
/* NULL when value is acceptable, else what is wrong with it (never quoting it). */
typedef const char *(*cfg_check_fn)(const char *value);

struct cfg_field {
    const char *key;
    cfg_kind_t kind;
    bool required;
    size_t off;
    size_t off_n;
    double min, max;
    const char *const *names; /* CF_ENUM, NULL-terminated */
    cfg_check_fn check;       /* strings, list items, kv values */
    cfg_check_fn key_check;   /* CF_KV keys */
    size_t limit;             /* CF_LIST / CF_KV: most entries */
    const cfg_field_t *sub;   /* CF_SECTION */
    size_t n_sub;
    cfg_parse_fn fn;
    cfg_dump_fn dump;
};

/* The dump's writer: indentation, and a pending "- " for the first key of a list item. */
struct cfg_out {
    FILE *f;
    const config_t *cfg;
    int indent;
    bool dash;
};

/* The schema (config_schema.c). */
extern const cfg_field_t cfg_root_fields[];
extern const size_t cfg_n_root_fields;
extern const char *const cfg_strategy_names[];
extern const char *const cfg_provider_type_names[];
int cfg_defaults(config_t *cfg);
int cfg_finish(cfg_ctx_t *c);

/* Errors and paths (config_node.c). */
int cfg_fail(cfg_ctx_t *c, const yaml_node_t *n, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int cfg_oom(cfg_ctx_t *c);
void cfg_path(char *out, const char *parent, const char *key);
void cfg_path_index(char *out, const char *parent, size_t i);
const char *cfg_suggest(const char *word, const char *const *cands, size_t n);

/* Nodes (config_node.c). */
yaml_node_t *cfg_node(cfg_ctx_t *c, int id);
bool cfg_is_null(const yaml_node_t *n);
int cfg_expect(cfg_ctx_t *c, yaml_node_t *n, const char *path, yaml_node_type_t type);
const char *cfg_scalar(cfg_ctx_t *c, yaml_node_t *n, const char *path, const char *what);
const char *cfg_key_text(cfg_ctx_t *c, yaml_node_t *key, const char *path);
int cfg_check_map(cfg_ctx_t *c, yaml_node_t *map, const char *path, const cfg_field_t *fields, size_t n,
                  size_t limit);
yaml_node_t *cfg_map_get(cfg_ctx_t *c, yaml_node_t *map, const char *key);
int cfg_i64(cfg_ctx_t *c, yaml_node_t *n, const char *path, int64_t lo, int64_t hi, int64_t *out);
int cfg_num(cfg_ctx_t *c, yaml_node_t *n, const char *path, double lo, double hi, double *out);
int cfg_walk(cfg_ctx_t *c, yaml_node_t *map, const char *path, const cfg_field_t *fields, size_t n,
             void *base);

/* ${VAR} expansion (config_expand.c): appends the expansion of s[0..len) to out. 0, or -1 with what is
 * wrong in why. */
int cfg_expand(const char *s, size_t len, buf_t *out, char *why, size_t whylen);

/* The dump (config_dump.c). */
void cfg_out_key(cfg_out_t *o, const char *key);
void cfg_out_str(cfg_out_t *o, const char *s, bool value);
void cfg_out_fields(cfg_out_t *o, const cfg_field_t *fields, size_t n, const void *base);
void cfg_out_num(cfg_out_t *o, double v);

/* Secrets (config.c). */
bool cfg_name_is_secret(const char *name);
/* The password span of a URL's userinfo (or the whole userinfo when it has no ':'); false if none. */
bool cfg_url_password(const char *url, size_t *start, size_t *len);

#endif
