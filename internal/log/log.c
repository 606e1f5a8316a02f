/* log.c — formats one line per call into a stack buffer and writes it with a single fwrite (or, while
 * batching, appends info and debug lines to one buffer written by log_flush). */
#include "log/log.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/base.h"

#define LOG_LINE_MAX    8192
#define LOG_MAX_SECRETS 64
#define LOG_BATCH_BYTES (64 * 1024)

static log_level_t min_level = LOG_INFO;
static log_format_t line_format = LOG_FORMAT_JSON;
static FILE *log_out;
static char *secrets[LOG_MAX_SECRETS];
static size_t n_secrets;
static bool secret_first[256]; /* first bytes of the registered secrets: only there can one start */
static pthread_mutex_t secrets_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* Lines held back by log_batch until log_flush (or a warning, or a full buffer). */
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static bool batching;
static char batch[LOG_BATCH_BYTES];
static size_t batch_len;

/* Writes the held lines. Caller holds out_lock. */
static void batch_write(void)
{
    if (batch_len == 0)
        return;
    fwrite(batch, 1, batch_len, log_out ? log_out : stderr);
    fflush(log_out ? log_out : stderr);
    batch_len = 0;
}

void log_setup(log_level_t level, log_format_t format, FILE *out)
{
    min_level = level;
    line_format = format;
    log_out = out;
}

bool log_enabled(log_level_t level) { return level >= min_level; }

const char *log_level_name(log_level_t level) { return level_names[level]; }

int log_level_parse(const char *s)
{
    for (size_t i = 0; i < BASE_ARRAY_LEN(level_names); i++)
        if (strcmp(s, level_names[i]) == 0)
            return (int)i;
    if (strcmp(s, "warning") == 0)
        return LOG_WARN;
    return -1;
}

int log_format_parse(const char *s)
{
    if (strcmp(s, "json") == 0)
        return LOG_FORMAT_JSON;
    if (strcmp(s, "text") == 0)
        return LOG_FORMAT_TEXT;
    return -1;
}

void log_register_secret(const char *value)
{
    if (!value || strlen(value) < 4) /* too short to mask without mangling ordinary text */
        return;
    pthread_mutex_lock(&secrets_lock);
    for (size_t i = 0; i < n_secrets; i++)
        if (strcmp(secrets[i], value) == 0)
            goto out;
    if (n_secrets < LOG_MAX_SECRETS) {
        char *copy = base_strdup(value);
        if (copy) {
            secrets[n_secrets++] = copy;
            secret_first[(unsigned char)copy[0]] = true;
        }
    }
out:
    pthread_mutex_unlock(&secrets_lock);
}

void log_forget_secrets(void)
{
    pthread_mutex_lock(&secrets_lock);
    for (size_t i = 0; i < n_secrets; i++)
        free(secrets[i]);
    n_secrets = 0;
    memset(secret_first, 0, sizeof secret_first);
    pthread_mutex_unlock(&secrets_lock);
}

typedef struct {
    char *p;
    size_t len;
    size_t cap;
} line_t;

static void line_put(line_t *l, const char *s, size_t n)
{
    if (l->len + n >= l->cap)
        n = l->cap - 1 - l->len;
    memcpy(l->p + l->len, s, n);
    l->len += n;
}

static void line_puts(line_t *l, const char *s) { line_put(l, s, strlen(s)); }

/* Length of the registered secret that starts at s, or 0. Caller holds secrets_lock. */
static size_t secret_at(const char *s)
{
    for (size_t i = 0; i < n_secrets; i++) {
        size_t n = strlen(secrets[i]);
        if (strncmp(s, secrets[i], n) == 0)
            return n;
    }
    return 0;
}

/* Appends s, JSON-escaped when json is set, with registered secrets replaced by the mask. */
static void line_put_value(line_t *l, const char *s, bool json)
{
    while (s && *s) {
        size_t run = 0; /* bytes that need neither escaping nor a secret check, copied at once */
        for (unsigned char c;
             (c = (unsigned char)s[run]) >= 0x20 && c != '"' && c != '\\' && !secret_first[c];)
            run++;
        line_put(l, s, run);
        s += run;
        if (!*s)
            break;
        size_t secret_len = n_secrets ? secret_at(s) : 0;
        if (secret_len) {
            line_puts(l, SECRET_MASK);
            s += secret_len;
            continue;
        }
        unsigned char c = (unsigned char)*s++;
        if (json && (c == '"' || c == '\\')) {
            char esc[2] = {'\\', (char)c};
            line_put(l, esc, 2);
        } else if (c < 0x20) {
            char esc[8];
            int n = c == '\n' ? snprintf(esc, sizeof esc, "\\n") : snprintf(esc, sizeof esc, "\\u%04x", c);
            line_put(l, esc, (size_t)n);
        } else {
            line_put(l, (const char *)&c, 1);
        }
    }
}

static bool needs_quotes(const char *s)
{
    if (!*s)
        return true;
    for (; *s; s++)
        if (*s == ' ' || *s == '"' || *s == '=' || (unsigned char)*s < 0x20)
            return true;
    return false;
}

/* Writes v in decimal with its NUL at out (room for 22 bytes); snprintf costs ~10 times more. */
static void fmt_i64(char *out, long long v) { out[base_i64_dec(out, v)] = '\0'; }

/* Writes v as exactly width decimal digits (zero-padded) at out. */
static void fmt_fixed(char *out, long v, int width)
{
    for (int i = width - 1; i >= 0; i--, v /= 10)
        out[i] = (char)('0' + v % 10);
}

static void line_put_field(line_t *l, const log_field_t *f, bool json)
{
    char num[64];
    switch (f->type) {
    case LOG_F_STR:
        if (json || needs_quotes(f->s ? f->s : "")) {
            line_puts(l, "\"");
            line_put_value(l, f->s ? f->s : "", true);
            line_puts(l, "\"");
        } else {
            line_put_value(l, f->s, false);
        }
        return;
    case LOG_F_INT:
        fmt_i64(num, f->i);
        break;
    case LOG_F_DBL:
        snprintf(num, sizeof num, "%.6g", f->d);
        break;
    case LOG_F_BOOL:
        snprintf(num, sizeof num, "%s", f->i ? "true" : "false");
        break;
    }
    line_puts(l, num);
}

void log_at(log_level_t level, const char *msg, const log_field_t *fields, size_t n_fields)
{
    char storage[LOG_LINE_MAX];
    line_t l = {storage, 0, sizeof storage - 1};
    bool json = line_format == LOG_FORMAT_JSON;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[] = "YYYY-MM-DDTHH:MM:SS.mmmZ";
    fmt_fixed(when, (tm.tm_year + 1900) % 10000, 4);
    fmt_fixed(when + 5, tm.tm_mon + 1, 2);
    fmt_fixed(when + 8, tm.tm_mday, 2);
    fmt_fixed(when + 11, tm.tm_hour, 2);
    fmt_fixed(when + 14, tm.tm_min, 2);
    fmt_fixed(when + 17, tm.tm_sec, 2);
    fmt_fixed(when + 20, ts.tv_nsec / 1000000, 3);

    pthread_mutex_lock(&secrets_lock);
    if (json) {
        line_puts(&l, "{\"ts\":\"");
        line_puts(&l, when);
        line_puts(&l, "\",\"level\":\"");
        line_puts(&l, level_names[level]);
        line_puts(&l, "\",\"msg\":\"");
        line_put_value(&l, msg, true);
        line_puts(&l, "\"");
    } else {
        line_puts(&l, when);
        line_puts(&l, " ");
        line_puts(&l, level_names[level]);
        line_puts(&l, " ");
        line_put_value(&l, msg, false);
    }
    for (size_t i = 0; i < n_fields; i++) {
        const log_field_t *f = &fields[i];
        if (!f->key)
            continue;
        line_puts(&l, json ? ",\"" : " ");
        line_put_value(&l, f->key, json);
        line_puts(&l, json ? "\":" : "=");
        line_put_field(&l, f, json);
    }
    pthread_mutex_unlock(&secrets_lock);
    if (json)
        line_puts(&l, "}");
    l.p[l.len++] = '\n';
    pthread_mutex_lock(&out_lock);
    if (batching && level < LOG_WARN && batch_len + l.len <= sizeof batch) {
        memcpy(batch + batch_len, l.p, l.len);
        batch_len += l.len;
    } else {
        batch_write();
        fwrite(l.p, 1, l.len, log_out ? log_out : stderr);
        fflush(log_out ? log_out : stderr);
    }
    pthread_mutex_unlock(&out_lock);
}

void log_batch(bool on)
{
    pthread_mutex_lock(&out_lock);
    batch_write();
    batching = on;
    pthread_mutex_unlock(&out_lock);
}

void log_flush(void)
{
    pthread_mutex_lock(&out_lock);
    batch_write();
    pthread_mutex_unlock(&out_lock);
}
