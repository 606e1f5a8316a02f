/* fuzz_config.c — libFuzzer target for the config loader: any bytes either load or give an error
 * message, never a crash or a leak; and what loads dumps to YAML that loads back to the same dump. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

/* The dump of cfg as a string (caller frees), or NULL. */
static char *dump(const config_t *cfg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    if (!out)
        return NULL;
    int rc = config_dump(cfg, out);
    fclose(out);
    if (rc != 0) {
        free(text);
        return NULL;
    }
    return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    config_t *a = config_load_string((const char *)data, size, "fuzz.yaml", err, sizeof err);
    if (!a) {
        if (strncmp(err, "fuzz.yaml", 9) != 0) /* every message names the file */
            __builtin_trap();
        return 0;
    }
    char *da = dump(a);
    config_t *b = da ? config_load_string(da, strlen(da), "dump.yaml", err, sizeof err) : NULL;
    char *db = b ? dump(b) : NULL;
    if (!da || !b || !db || strcmp(da, db) != 0) {
        fprintf(stderr, "round trip failed: %s\n--- first dump:\n%s\n", b ? "dumps differ" : err,
                da ? da : "");
        __builtin_trap();
    }
    free(da);
    free(db);
    config_free(a);
    config_free(b);
    return 0;
}
