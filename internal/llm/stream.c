/* stream.c — a streamed answer: raw bytes → SSE events → the provider's event handler, with the
 * accumulated text, the first-token notion, and the complete-versus-cut verdict at the end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm/llm_int.h"

llm_stream_t *llm_stream_new(provider_type_t t, size_t max_line, size_t max_event, llm_on_delta_fn on_delta,
                             llm_stream_sink_t *sink)
{
    llm_stream_t *s = base_calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->type = t;
    s->on_delta = on_delta;
    s->sink = sink;
    llm_sse_init(&s->sse, max_line, max_event);
    buf_init(&s->text, 0);
    return s;
}

void llm_stream_free(llm_stream_t *s)
{
    if (!s)
        return;
    llm_sse_free(&s->sse);
    buf_free(&s->text);
    llm_result_free(&s->res);
    free(s);
}

bool llm_stream_complete(const llm_stream_t *s) { return s->complete; }

int llm_stream_emit(llm_stream_t *s, json_value_t text)
{
    size_t at = s->text.len;
    if (llm_json_append(&s->text, text) < 0)
        return llm_fail(&s->res, LLM_ERR_NOMEM, "out_of_memory", "out of memory");
    if (s->text.len == at)
        return 0;
    bool first = !s->first_sent;
    s->first_sent = true;
    if (s->on_delta)
        s->on_delta(s->sink, s->text.data + at, s->text.len - at, first);
    return 0;
}

/* One SSE event: JSON object data (or the provider's done_data) goes to the provider's handler. */
static int handle_event(llm_stream_t *s, const llm_sse_event_t *ev)
{
    const llm_provider_t *prov = llm_provider_of(s->type);
    json_doc_t doc;
    json_value_t root, member[LLM_ROOT_KEYS];
    if (prov->done_data && ev->data_len == strlen(prov->done_data) &&
        !memcmp(ev->data, prov->done_data, ev->data_len))
        return prov->event(s, ev, NULL);
    if (!llm_json_object(ev->data, ev->data_len, &doc, &root, prov->event_keys, prov->n_event_keys, member))
        return llm_fail(&s->res, LLM_ERR_MALFORMED, "malformed_response",
                        "stream event data is not a JSON object");
    return prov->event(s, ev, member);
}

static int sse_fail(llm_stream_t *s, int rc)
{
    char msg[96];
    if (rc == LLM_SSE_E_NOMEM)
        return llm_fail(&s->res, LLM_ERR_NOMEM, "out_of_memory", "out of memory");
    bool line = rc == LLM_SSE_E_LINE;
    snprintf(msg, sizeof msg, "SSE %s than %zu bytes", line ? "line longer" : "event larger",
             line ? s->sse.max_line : s->sse.max_data);
    return llm_fail(&s->res, LLM_ERR_LIMIT, "sse_limit", msg);
}

int llm_stream_feed(llm_stream_t *s, const char *chunk, size_t n)
{
    while (n > 0) {
        if (s->res.error.kind != LLM_ERR_NONE)
            return -1;
        if (s->complete)
            return 0;
        size_t used;
        llm_sse_event_t ev;
        int rc = llm_sse_feed(&s->sse, chunk, n, &used, &ev);
        chunk += used;
        n -= used;
        if (rc < 0)
            return sse_fail(s, rc);
        if (rc == LLM_SSE_EVENT && handle_event(s, &ev) < 0)
            return -1;
    }
    return s->res.error.kind != LLM_ERR_NONE ? -1 : 0;
}

int llm_stream_finish(llm_stream_t *s, llm_result_t *out)
{
    char msg[64];
    if (s->res.error.kind == LLM_ERR_NONE && !s->complete) {
        snprintf(msg, sizeof msg, "stream ended before %s", llm_provider_of(s->type)->end_marker);
        llm_fail(&s->res, LLM_ERR_CUT, "stream_cut", msg);
    } else if (s->res.error.kind == LLM_ERR_NONE && !s->started)
        llm_fail(&s->res, LLM_ERR_MALFORMED, "malformed_response", "stream ended without an answer");
    if (s->res.error.kind == LLM_ERR_NONE) {
        s->res.text = buf_steal(&s->text, &s->res.text_len);
        if (!s->res.text)
            llm_fail(&s->res, LLM_ERR_NOMEM, "out_of_memory", "out of memory");
    }
    *out = s->res;
    memset(&s->res, 0, sizeof s->res);
    return out->error.kind == LLM_ERR_NONE ? 0 : -1;
}
