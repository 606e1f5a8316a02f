/* jsonw.c — a small JSON writer for request bodies: length-aware strings (content may hold NUL
 * bytes or invalid UTF-8, which cJSON's writer cannot take), shortest round-trip numbers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm/llm_int.h"

int llm_jw_str_open(buf_t *b) { return buf_append(b, "\"", 1); }
int llm_jw_str_close(buf_t *b) { return buf_append(b, "\"", 1); }

int llm_jw_str_bytes(buf_t *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t run = 0; /* start of the pending run of bytes that need no escaping */
    size_t i = 0;
    while (i < n) {
        i += base_json_plain_run(u + i, n - i); /* the common case: plain ASCII, 16 bytes at a time */
        if (i >= n)
            break;
        /* the run stopped at a control byte, a quote, a backslash or a byte >= 0x80 */
        unsigned char c = u[i];
        size_t seq = base_utf8_seq_len(u + i, n - i);
        if (seq > 1) {
            i += seq;
            continue;
        }
        if (buf_append(b, s + run, i - run) < 0)
            return -1;
        int rc;
        if (seq == 0)
            rc = buf_append(b, "\xEF\xBF\xBD", 3);
        else if (c == '"' || c == '\\')
            rc = buf_printf(b, "\\%c", c);
        else if (c == '\n')
            rc = buf_append(b, "\\n", 2);
        else if (c == '\r')
            rc = buf_append(b, "\\r", 2);
        else if (c == '\t')
            rc = buf_append(b, "\\t", 2);
        else
            rc = buf_printf(b, "\\u%04x", c);
        if (rc < 0)
            return -1;
        i++;
        run = i;
    }
    return buf_append(b, s + run, n - run);
}

/* Keys are names from the code (never from a job or a config), so they are written as they are. */
int llm_jw_key(buf_t *b, const char *key)
{
    size_t n = key ? strlen(key) : 0;
    if (buf_reserve(b, n + 4) < 0) /* , " key " : */
        return -1;
    char *p = b->data + b->len;
    char last = b->len ? p[-1] : '{';
    if (last != '{' && last != '[')
        *p++ = ',';
    if (key) {
        *p++ = '"';
        memcpy(p, key, n);
        p += n;
        *p++ = '"';
        *p++ = ':';
    }
    b->len = (size_t)(p - b->data);
    b->data[b->len] = '\0';
    return 0;
}

int llm_jw_string(buf_t *b, const char *key, const char *s, size_t n)
{
    if (llm_jw_key(b, key) < 0 || llm_jw_str_open(b) < 0 || llm_jw_str_bytes(b, s, n) < 0)
        return -1;
    return llm_jw_str_close(b);
}

/* Shortest "%.Ng" that reads back as the same double (v is finite; the caller checked). */
int llm_jw_double(buf_t *b, const char *key, double v)
{
    char tmp[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    if (llm_jw_key(b, key) < 0)
        return -1;
    return buf_append_str(b, tmp);
}

int llm_jw_int(buf_t *b, const char *key, int64_t v)
{
    char digits[21];
    size_t n = base_i64_dec(digits, v);
    if (llm_jw_key(b, key) < 0)
        return -1;
    return buf_append(b, digits, n);
}

int llm_jw_bool(buf_t *b, const char *key, bool v)
{
    if (llm_jw_key(b, key) < 0)
        return -1;
    return buf_append_str(b, v ? "true" : "false");
}

int llm_jw_str_array(buf_t *b, const char *key, const char *const *v, size_t n)
{
    if (llm_jw_key(b, key) < 0 || buf_append(b, "[", 1) < 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (llm_jw_string(b, NULL, v[i], strlen(v[i])) < 0)
            return -1;
    return buf_append(b, "]", 1);
}

int llm_jw_common_params(buf_t *b, const llm_params_t *params, const char *stop_key)
{
    if (params->has_temperature && llm_jw_double(b, "temperature", params->temperature) < 0)
        return -1;
    if (params->has_top_p && llm_jw_double(b, "top_p", params->top_p) < 0)
        return -1;
    if (params->n_stop && llm_jw_str_array(b, stop_key, params->stop, params->n_stop) < 0)
        return -1;
    return 0;
}

int llm_jw_content(buf_t *b, const chat_message_t *m)
{
    if (!m->content_json)
        return llm_jw_string(b, "content", m->content ? m->content : "", m->content ? m->content_len : 0);
    return llm_jw_key(b, "content") < 0 || llm_jw_str_open(b) < 0 ||
                   buf_append(b, m->content_json, m->content_json_len) < 0 || llm_jw_str_close(b) < 0
               ? -1
               : 0;
}
