/* sse.c — an incremental text/event-stream parser after the WHATWG EventSource "interpreting an
 * event stream" rules, correct for any chunking, with a bound on line and event sizes. */
#include <string.h>

#include "llm/llm_int.h"

static const char bom[3] = {'\xEF', '\xBB', '\xBF'};

void llm_sse_init(llm_sse_t *p, size_t max_line, size_t max_data)
{
    memset(p, 0, sizeof *p);
    buf_init(&p->line, 0);
    buf_init(&p->data, 0);
    buf_init(&p->type, 0);
    p->max_line = max_line ? max_line : LLM_SSE_DEFAULT_MAX;
    p->max_data = max_data ? max_data : LLM_SSE_DEFAULT_MAX;
}

void llm_sse_free(llm_sse_t *p)
{
    buf_free(&p->line);
    buf_free(&p->data);
    buf_free(&p->type);
}

static int append_line(llm_sse_t *p, const char *s, size_t n)
{
    if (p->line.len + n > p->max_line)
        return LLM_SSE_E_LINE;
    return buf_append(&p->line, s, n) < 0 ? LLM_SSE_E_NOMEM : 0;
}

/* One complete line (without its end): LLM_SSE_EVENT when it dispatched an event into ev. */
static int process_line(llm_sse_t *p, llm_sse_event_t *ev)
{
    const char *l = p->line.data;
    size_t n = p->line.len;
    if (n == 0) {
        if (p->data.len == 0) {
            buf_reset(&p->type);
            return 0;
        }
        p->data.data[--p->data.len] = '\0'; /* the last data line's "\n" */
        ev->data = p->data.data;
        ev->data_len = p->data.len;
        ev->type = p->type.len ? p->type.data : "message";
        ev->type_len = p->type.len ? p->type.len : strlen("message");
        p->dispatched = true;
        return LLM_SSE_EVENT;
    }
    if (l[0] == ':')
        return 0;
    const char *colon = memchr(l, ':', n);
    size_t flen = colon ? (size_t)(colon - l) : n;
    const char *v = colon ? colon + 1 : l + n;
    size_t vlen = (size_t)(l + n - v);
    if (vlen && *v == ' ') {
        v++;
        vlen--;
    }
    if (flen == 4 && !memcmp(l, "data", 4)) {
        if (p->data.len + vlen + 1 > p->max_data)
            return LLM_SSE_E_DATA;
        if (buf_append(&p->data, v, vlen) < 0 || buf_append(&p->data, "\n", 1) < 0)
            return LLM_SSE_E_NOMEM;
    } else if (flen == 5 && !memcmp(l, "event", 5)) {
        buf_reset(&p->type);
        if (buf_append(&p->type, v, vlen) < 0)
            return LLM_SSE_E_NOMEM;
    }
    return 0;
}

/* Consumes the stream's leading BOM bytes; a partial match that fails becomes line content. */
static int skip_bom(llm_sse_t *p, const char *in, size_t n, size_t *i)
{
    while (p->bom < 3 && *i < n) {
        if (in[*i] == bom[p->bom]) {
            p->bom++;
            (*i)++;
            continue;
        }
        int rc = append_line(p, bom, (size_t)p->bom);
        p->bom = 3;
        return rc;
    }
    return 0;
}

int llm_sse_feed(llm_sse_t *p, const char *in, size_t n, size_t *used, llm_sse_event_t *ev)
{
    size_t i = 0;
    int rc = p->err;
    if (rc)
        goto out;
    if (p->dispatched) {
        buf_reset(&p->data);
        buf_reset(&p->type);
        p->dispatched = false;
    }
    if ((rc = skip_bom(p, in, n, &i)) != 0)
        goto out;
    while (i < n) {
        if (p->after_cr) {
            p->after_cr = false;
            if (in[i] == '\n') {
                i++;
                continue;
            }
        }
        size_t j = i;
        while (j < n && in[j] != '\r' && in[j] != '\n')
            j++;
        if ((rc = append_line(p, in + i, j - i)) != 0)
            goto out;
        if (j == n) {
            i = n;
            break;
        }
        p->after_cr = in[j] == '\r';
        i = j + 1;
        rc = process_line(p, ev);
        buf_reset(&p->line);
        if (rc != 0)
            goto out;
    }
    rc = LLM_SSE_NEED_MORE;
out:
    if (rc < 0)
        p->err = rc;
    *used = i;
    return rc;
}
