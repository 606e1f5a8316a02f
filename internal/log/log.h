/* log — structured log lines (json or text) on stderr, one write per line (or per batch, see log_batch),
 * safe from any thread.
 * Fields are typed key/value pairs; messages are constant strings, details go in fields.
 * Secrets never reach a line: config keeps them in secret_t (which prints as ***), and every value
 * registered with log_register_secret() is also masked in any field or message as a second guard.
 * It never allocates on the logging path beyond a stack buffer, and never exits. */
#ifndef PARLEY_LOG_H
#define PARLEY_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR } log_level_t;
typedef enum { LOG_FORMAT_JSON = 0, LOG_FORMAT_TEXT } log_format_t;

typedef enum { LOG_F_STR = 1, LOG_F_INT, LOG_F_DBL, LOG_F_BOOL } log_field_type_t;

typedef struct {
    const char *key; /* NULL = no field (a placeholder the macros use) */
    log_field_type_t type;
    const char *s;
    long long i;
    double d;
} log_field_t;

#define LOG_S(k, v) ((log_field_t){.key = (k), .type = LOG_F_STR, .s = (v)})
#define LOG_I(k, v) ((log_field_t){.key = (k), .type = LOG_F_INT, .i = (long long)(v)})
#define LOG_D(k, v) ((log_field_t){.key = (k), .type = LOG_F_DBL, .d = (double)(v)})
#define LOG_B(k, v) ((log_field_t){.key = (k), .type = LOG_F_BOOL, .i = (v) ? 1 : 0})

void log_setup(log_level_t level, log_format_t format, FILE *out);
bool log_enabled(log_level_t level);
/* With on, info and debug lines are held in one 64 KiB buffer and written together by log_flush (an event
 * loop calls it once per iteration, so a busy worker makes one write for many lines instead of one each);
 * a warning or an error writes what is held, then itself, at once. Off writes what is held. */
void log_batch(bool on);
void log_flush(void);
/* Parses "debug|info|warn|error" / "json|text"; -1 when unknown. */
int log_level_parse(const char *s);
int log_format_parse(const char *s);
const char *log_level_name(log_level_t level);
/* Remember a secret value so that it is masked wherever it would appear. Copies it. */
void log_register_secret(const char *value);
void log_forget_secrets(void);

void log_at(log_level_t level, const char *msg, const log_field_t *fields, size_t n_fields);

#define LOG_FIELDS_(...) ((const log_field_t[]){{.key = NULL}, ##__VA_ARGS__})
#define LOG_AT_(lvl, msg, ...)                                                                               \
    do {                                                                                                     \
        if (log_enabled(lvl))                                                                                \
            log_at((lvl), (msg), LOG_FIELDS_(__VA_ARGS__),                                                   \
                   sizeof(LOG_FIELDS_(__VA_ARGS__)) / sizeof(log_field_t));                                  \
    } while (0)
#define log_debug(msg, ...) LOG_AT_(LOG_DEBUG, msg, ##__VA_ARGS__)
#define log_info(msg, ...)  LOG_AT_(LOG_INFO, msg, ##__VA_ARGS__)
#define log_warn(msg, ...)  LOG_AT_(LOG_WARN, msg, ##__VA_ARGS__)
#define log_error(msg, ...) LOG_AT_(LOG_ERROR, msg, ##__VA_ARGS__)

#endif
