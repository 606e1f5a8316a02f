/* fuzz_sse.c — libFuzzer target: arbitrary bytes through both stream interpreters (OpenAI and
 * Anthropic) and the raw SSE parser. Input: byte 0 picks the provider and small or default limits,
 * bytes 1-2 a split point, the rest is the stream. Oracle: no crash, leak or UB; the same answer
 * whether the stream comes whole, split in two at the chosen point, or (for short inputs) one byte
 * at a time; on success the deltas add up to the final text.
 * Build: clang -fsanitize=fuzzer,address,undefined -Iinternal -I/usr/include/cjson
 *        tests/fuzz/fuzz_sse.c plus the .c files of internal/llm, internal/log and internal/base, -lcjson */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "llm/llm.h"

struct llm_stream_sink {
    buf_t text;
    int firsts;
};

static void on_delta(llm_stream_sink_t *sink, const char *text, size_t len, bool first)
{
    if (len == 0)
        __builtin_trap();
    buf_append(&sink->text, text, len);
    sink->firsts += first;
}

typedef struct {
    int rc;
    llm_result_t r;
    llm_stream_sink_t sink;
} outcome_t;

/* Feeds data in pieces: [0, split), then the rest in steps of step bytes (0 = one piece). */
static void run(provider_type_t t, size_t lim, const char *data, size_t len, size_t split, size_t step,
                outcome_t *o)
{
    memset(o, 0, sizeof *o);
    buf_init(&o->sink.text, 0);
    llm_stream_t *s = llm_stream_new(t, lim, lim, on_delta, &o->sink);
    if (!s)
        __builtin_trap();
    int rc = llm_stream_feed(s, data, split);
    for (size_t i = split; rc == 0 && i < len;) {
        size_t n = step && i + step < len ? step : len - i;
        rc = llm_stream_feed(s, data + i, n);
        i += n;
    }
    o->rc = llm_stream_finish(s, &o->r);
    if ((rc < 0 && o->rc == 0) || (o->rc == 0) != (o->r.error.kind == LLM_ERR_NONE))
        __builtin_trap();
    llm_stream_free(s);
}

static void same(const outcome_t *a, const outcome_t *b)
{
    if (a->rc != b->rc || a->r.error.kind != b->r.error.kind ||
        strcmp(a->r.finish_reason, b->r.finish_reason) ||
        a->r.usage.prompt_tokens != b->r.usage.prompt_tokens ||
        a->r.usage.completion_tokens != b->r.usage.completion_tokens || strcmp(a->r.model, b->r.model))
        __builtin_trap();
    if (a->rc == 0 && (a->r.text_len != b->r.text_len || memcmp(a->r.text, b->r.text, a->r.text_len)))
        __builtin_trap();
}

static void check_success(const outcome_t *o)
{
    if (o->rc != 0)
        return;
    if (o->sink.text.len != o->r.text_len ||
        (o->r.text_len && memcmp(o->sink.text.data, o->r.text, o->r.text_len)))
        __builtin_trap();
    if (o->sink.firsts != (o->r.text_len ? 1 : 0))
        __builtin_trap();
}

static void done(outcome_t *o)
{
    llm_result_free(&o->r);
    buf_free(&o->sink.text);
}

/* The raw parser with tiny limits: events must respect them. */
static void raw_sse(const char *data, size_t len)
{
    llm_sse_t p;
    llm_sse_init(&p, 32, 64);
    while (len > 0) {
        size_t used;
        llm_sse_event_t ev;
        int rc = llm_sse_feed(&p, data, len, &used, &ev);
        if (used > len)
            __builtin_trap();
        data += used;
        len -= used;
        if (rc < 0)
            break;
        if (rc == LLM_SSE_EVENT && (ev.data_len >= 64 || ev.type_len > 32 || ev.data[ev.data_len] != '\0'))
            __builtin_trap();
    }
    llm_sse_free(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size)
{
    if (size < 3)
        return 0;
    provider_type_t t = in[0] & 1 ? PROVIDER_ANTHROPIC : PROVIDER_OPENAI;
    size_t lim = in[0] & 2 ? 48 : 0;
    const char *data = (const char *)in + 3;
    size_t len = size - 3;
    size_t split = ((size_t)in[1] << 8 | in[2]) % (len + 1);
    outcome_t whole, two, bytes;
    run(t, lim, data, len, len, 0, &whole);
    run(t, lim, data, len, split, 0, &two);
    same(&whole, &two);
    check_success(&whole);
    if (len <= 4096) {
        run(t, lim, data, len, 0, 1, &bytes);
        same(&whole, &bytes);
        done(&bytes);
    }
    done(&whole);
    done(&two);
    raw_sse(data, len);
    return 0;
}
