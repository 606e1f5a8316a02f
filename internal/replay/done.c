/* done.c — the resume set: finished (turn, target) pairs, read back from a results file. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "replay/replay.h"

typedef struct {
    char *key; /* "turn\x1ftarget" */
    char *answer;
} done_entry_t;

struct replay_done {
    done_entry_t *slots;
    size_t cap; /* power of two */
    size_t n;
};

static uint64_t hash_key(const char *turn, const char *target)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = turn; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    h = (h ^ 0x1f) * 1099511628211ull;
    for (const char *p = target; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return h;
}

static bool key_eq(const char *key, const char *turn, const char *target)
{
    size_t tl = strlen(turn);
    return strncmp(key, turn, tl) == 0 && key[tl] == 0x1f && strcmp(key + tl + 1, target) == 0;
}

/* The slot holding the pair, or the empty slot where it would go. */
static done_entry_t *find_slot(done_entry_t *slots, size_t cap, const char *turn, const char *target)
{
    size_t i = (size_t)hash_key(turn, target) & (cap - 1);
    while (slots[i].key && !key_eq(slots[i].key, turn, target))
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

replay_done_t *replay_done_new(void)
{
    replay_done_t *d = base_calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->cap = 64;
    d->slots = base_calloc(d->cap, sizeof *d->slots);
    if (!d->slots) {
        free(d);
        return NULL;
    }
    return d;
}

void replay_done_free(replay_done_t *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->cap; i++) {
        free(d->slots[i].key);
        free(d->slots[i].answer);
    }
    free(d->slots);
    free(d);
}

/* Doubles the table. 0, or -1 when out of memory (table unchanged). */
static int grow(replay_done_t *d)
{
    size_t cap = d->cap * 2;
    done_entry_t *slots = base_calloc(cap, sizeof *slots);
    if (!slots)
        return -1;
    for (size_t i = 0; i < d->cap; i++) {
        if (!d->slots[i].key)
            continue;
        const char *k = d->slots[i].key;
        const char *sep = strchr(k, 0x1f);
        char turn[1024];
        size_t tl = (size_t)(sep - k) < sizeof turn - 1 ? (size_t)(sep - k) : sizeof turn - 1;
        memcpy(turn, k, tl);
        turn[tl] = '\0';
        *find_slot(slots, cap, turn, sep + 1) = d->slots[i];
    }
    free(d->slots);
    d->slots = slots;
    d->cap = cap;
    return 0;
}

int replay_done_add(replay_done_t *d, const char *turn_id, const char *target, const char *answer)
{
    if (strlen(turn_id) >= 1024)
        return -1;
    if ((d->n + 1) * 2 > d->cap && grow(d) != 0)
        return -1;
    done_entry_t *e = find_slot(d->slots, d->cap, turn_id, target);
    if (e->key)
        return 0;
    size_t tl = strlen(turn_id), gl = strlen(target);
    char *key = base_malloc(tl + gl + 2);
    char *ans = answer ? base_strdup(answer) : NULL;
    if (!key || (answer && !ans)) {
        free(key);
        free(ans);
        return -1;
    }
    memcpy(key, turn_id, tl);
    key[tl] = 0x1f;
    memcpy(key + tl + 1, target, gl + 1);
    e->key = key;
    e->answer = ans;
    d->n++;
    return 0;
}

bool replay_done_has(const replay_done_t *d, const char *turn_id, const char *target)
{
    return find_slot(d->slots, d->cap, turn_id, target)->key != NULL;
}

const char *replay_done_answer(const replay_done_t *d, const char *turn_id, const char *target)
{
    return find_slot(d->slots, d->cap, turn_id, target)->answer;
}

size_t replay_done_count(const replay_done_t *d) { return d->n; }

/* Adds the pair of one results line; lines that are not results are ignored. */
static int load_line(replay_done_t *d, const char *line, size_t len, bool keep_answers)
{
    cJSON *o = cJSON_ParseWithLength(line, len);
    if (!o)
        return 0;
    const char *turn = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "turn_id"));
    const char *target = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "target"));
    const char *status = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "status"));
    const char *answer = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "answer"));
    int rc = 0;
    if (turn && target)
        rc = replay_done_add(d, turn, target,
                             keep_answers && status && strcmp(status, "ok") == 0 ? answer : NULL);
    cJSON_Delete(o);
    return rc;
}

int replay_done_load(replay_done_t *d, const char *path, bool keep_answers, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r+");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    int rc = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    off_t good = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] != '\n')
            break;
        if (load_line(d, line, (size_t)n - 1, keep_answers) != 0) {
            snprintf(err, errlen, "%s: out of memory", path);
            rc = -1;
            goto out;
        }
        good += n;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && st.st_size > good && ftruncate(fileno(f), good) != 0) {
        snprintf(err, errlen, "%s: cannot cut the partial last line: %s", path, strerror(errno));
        rc = -1;
    }
out:
    free(line);
    fclose(f);
    return rc;
}
