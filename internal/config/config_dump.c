/* config_dump.c — the effective configuration as YAML that config_load_string reads back to the same
 * config: every key of the schema tables, strings double-quoted (values with $ doubled, so that ${VAR}
 * expansion gives them back unchanged), and every secret shown as ***. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_int.h"

/* Prints the indentation (or the pending "- " of a list item), then key and ':' when key is given. */
void cfg_out_key(cfg_out_t *o, const char *key)
{
    int pad = o->dash ? o->indent - 2 : o->indent;
    fprintf(o->f, "%*s%s", pad > 0 ? pad : 0, "", o->dash ? "- " : "");
    o->dash = false;
    if (key)
        fprintf(o->f, "%s:", key);
}

/* Decodes the UTF-8 sequence at p (the loader checks every string) into *cp; returns its length. */
static size_t utf8_decode(const unsigned char *p, uint32_t *cp)
{
    if (p[0] < 0x80) {
        *cp = p[0];
        return 1;
    }
    size_t n = p[0] >= 0xf0 ? 4 : p[0] >= 0xe0 ? 3 : 2;
    uint32_t v = p[0] & (0x7f >> n);
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) { /* not UTF-8 after all: one byte, printed escaped */
            *cp = p[0];
            return 1;
        }
        v = (v << 6) | (p[i] & 0x3f);
    }
    *cp = v;
    return n;
}

/* What YAML reads back unchanged inside double quotes: printable, and not a line break it would fold. */
static bool yaml_printable(uint32_t cp)
{
    return (cp >= 0x20 && cp <= 0x7e) || (cp >= 0xa0 && cp <= 0xd7ff && cp != 0x2028 && cp != 0x2029) ||
           (cp >= 0xe000 && cp <= 0xfffd && cp != 0xfeff) || (cp >= 0x10000 && cp <= 0x10ffff);
}

void cfg_out_str(cfg_out_t *o, const char *s, bool value)
{
    FILE *f = o->f;
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p;) {
        uint32_t cp;
        size_t n = utf8_decode(p, &cp);
        if (cp == '"' || cp == '\\')
            fprintf(f, "\\%c", (int)cp);
        else if (cp == '$')
            fputs(value ? "$$" : "$", f);
        else if (cp == '\n')
            fputs("\\n", f);
        else if (cp == '\t')
            fputs("\\t", f);
        else if (yaml_printable(cp))
            fwrite(p, 1, n, f);
        else if (cp < 0x100)
            fprintf(f, "\\x%02x", (unsigned)cp);
        else
            fprintf(f, "\\u%04x", (unsigned)cp);
        p += n;
    }
    fputc('"', f);
}

/* The shortest form that reads back as the same double. */
void cfg_out_num(cfg_out_t *o, double v)
{
    char text[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(text, sizeof text, "%.*g", prec, v);
        if (strtod(text, NULL) == v)
            break;
    }
    fputs(text, o->f);
}

static void out_list(cfg_out_t *o, const cfg_field_t *f, const void *base)
{
    char *const *items = *(char *const *const *)((const char *)base + f->off);
    size_t n = *(const size_t *)((const char *)base + f->off_n);
    fputs(n ? "\n" : " []\n", o->f);
    for (size_t i = 0; i < n; i++) {
        cfg_out_key(o, NULL);
        fputs("  - ", o->f);
        cfg_out_str(o, items[i], true);
        fputc('\n', o->f);
    }
}

static void out_kv(cfg_out_t *o, const cfg_field_t *f, const void *base)
{
    const config_kv_t *kv = *(const config_kv_t *const *)((const char *)base + f->off);
    size_t n = *(const size_t *)((const char *)base + f->off_n);
    fputs(n ? "\n" : " {}\n", o->f);
    for (size_t i = 0; i < n; i++) {
        cfg_out_key(o, NULL);
        fputs("  ", o->f);
        cfg_out_str(o, kv[i].key, false);
        fputs(": ", o->f);
        bool masked = *kv[i].value && cfg_name_is_secret(kv[i].key);
        cfg_out_str(o, masked ? SECRET_MASK : kv[i].value, true);
        fputc('\n', o->f);
    }
}

/* Prints one field of base. */
static void out_field(cfg_out_t *o, const cfg_field_t *f, const void *base)
{
    if (f->dump) {
        f->dump(o, f, base);
        return;
    }
    const void *p = (const char *)base + f->off;
    cfg_out_key(o, f->key);
    switch (f->kind) {
    case CF_STR:
    case CF_STR_OPT:
        fputc(' ', o->f);
        cfg_out_str(o, *(char *const *)p, true);
        fputc('\n', o->f);
        break;
    case CF_SECRET:
        fputc(' ', o->f);
        cfg_out_str(o, secret_masked(p), true);
        fputc('\n', o->f);
        break;
    case CF_INT:
        fprintf(o->f, " %d\n", *(const int *)p);
        break;
    case CF_I64:
        fprintf(o->f, " %" PRId64 "\n", *(const int64_t *)p);
        break;
    case CF_NUM:
        fputc(' ', o->f);
        cfg_out_num(o, *(const double *)p);
        fputc('\n', o->f);
        break;
    case CF_BOOL:
        fputs(*(const bool *)p ? " true\n" : " false\n", o->f);
        break;
    case CF_ENUM:
        fprintf(o->f, " %s\n", f->names[*(const int *)p]);
        break;
    case CF_LIST:
        out_list(o, f, base);
        break;
    case CF_KV:
        out_kv(o, f, base);
        break;
    case CF_SECTION:
        fputc('\n', o->f);
        o->indent += 2;
        cfg_out_fields(o, f->sub, f->n_sub, p);
        o->indent -= 2;
        break;
    case CF_CUSTOM:
        break;
    }
}

void cfg_out_fields(cfg_out_t *o, const cfg_field_t *fields, size_t n, const void *base)
{
    for (size_t i = 0; i < n; i++)
        out_field(o, &fields[i], base);
}

int config_dump(const config_t *cfg, FILE *out)
{
    cfg_out_t o = {.f = out, .cfg = cfg};
    fputs("# effective configuration of parley: every key, defaults filled in, secrets shown as ***\n", out);
    cfg_out_fields(&o, cfg_root_fields, cfg_n_root_fields, cfg);
    return fflush(out) == 0 && !ferror(out) ? 0 : -1;
}
