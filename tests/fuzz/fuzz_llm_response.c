/* fuzz_llm_response.c — libFuzzer target: arbitrary bodies through llm_response_parse for both
 * providers. Input: byte 0 picks the provider and the HTTP status, the rest is the body.
 * Oracle: no crash, leak or UB; success has text and no error, failure has an error and no text;
 * a non-2xx status is never a success.
 * Build: clang -fsanitize=fuzzer,address,undefined -Iinternal -I/usr/include/cjson
 *        tests/fuzz/fuzz_llm_response.c plus the .c files of internal/llm, internal/log and internal/base,
 * -lcjson */
#include <stdint.h>
#include <string.h>

#include "llm/llm.h"

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size)
{
    static const int statuses[] = {200, 201, 400, 401, 404, 408, 429, 500, 502, 529, 0, 302};
    if (size < 1)
        return 0;
    provider_type_t t = in[0] & 1 ? PROVIDER_ANTHROPIC : PROVIDER_OPENAI;
    int status = statuses[(in[0] >> 1) % (sizeof statuses / sizeof statuses[0])];
    llm_result_t r;
    int rc = llm_response_parse(t, status, (const char *)in + 1, size - 1, &r);
    if (rc == 0 && (r.error.kind != LLM_ERR_NONE || !r.text || r.text[r.text_len] != '\0' || status >= 300))
        __builtin_trap();
    if (rc != 0 &&
        (r.error.kind == LLM_ERR_NONE || r.text || !memchr(r.error.message, '\0', sizeof r.error.message)))
        __builtin_trap();
    llm_result_free(&r);
    return 0;
}
