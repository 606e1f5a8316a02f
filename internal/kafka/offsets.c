/* offsets.c — the per-partition offset tracker: a ring of (offset, done) in increasing offset order.
 * Offsets are taken in increasing order, so track appends at the tail; finish finds its entry by
 * binary search and then pops every done entry at the head, which is what moves the commit point. */
#include "kafka/kafka.h"

#include <stdlib.h>

#include "base/base.h"

typedef struct {
    int64_t offset;
    bool done;
} entry_t;

struct kafka_offsets {
    entry_t *ring;
    size_t cap; /* a power of two, or 0 */
    size_t head;
    size_t len;
    size_t held; /* entries not done */
    int64_t last_tracked;
    int64_t committable;
};

#define OFFSETS_MIN_CAP 16

kafka_offsets_t *kafka_offsets_new(void)
{
    kafka_offsets_t *t = base_calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->last_tracked = -1;
    t->committable = -1;
    return t;
}

void kafka_offsets_free(kafka_offsets_t *t)
{
    if (!t)
        return;
    free(t->ring);
    free(t);
}

static entry_t *at(const kafka_offsets_t *t, size_t i) { return &t->ring[(t->head + i) & (t->cap - 1)]; }

/* Doubles the ring, unwrapping it so that the head is at index 0. */
static int grow(kafka_offsets_t *t)
{
    size_t cap = t->cap ? t->cap * 2 : OFFSETS_MIN_CAP;
    entry_t *ring = base_malloc(cap * sizeof(*ring));
    if (!ring)
        return -1;
    for (size_t i = 0; i < t->len; i++)
        ring[i] = *at(t, i);
    free(t->ring);
    t->ring = ring;
    t->cap = cap;
    t->head = 0;
    return 0;
}

int kafka_offsets_track(kafka_offsets_t *t, int64_t offset)
{
    if (offset < 0 || offset <= t->last_tracked)
        return -1;
    if (t->len == t->cap && grow(t) < 0)
        return -2;
    *at(t, t->len) = (entry_t){.offset = offset, .done = false};
    t->len++;
    t->held++;
    if (t->len == 1)
        t->committable = offset;
    t->last_tracked = offset;
    return 0;
}

int kafka_offsets_finish(kafka_offsets_t *t, int64_t offset)
{
    size_t lo = 0, hi = t->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (at(t, mid)->offset < offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == t->len || at(t, lo)->offset != offset || at(t, lo)->done)
        return -1;
    at(t, lo)->done = true;
    t->held--;
    if (lo != 0)
        return 0;
    int64_t last = offset;
    while (t->len > 0 && at(t, 0)->done) {
        last = at(t, 0)->offset;
        t->head = (t->head + 1) & (t->cap - 1);
        t->len--;
    }
    t->committable = t->len > 0 ? at(t, 0)->offset : last + 1;
    return 1;
}

int64_t kafka_offsets_committable(const kafka_offsets_t *t) { return t->committable; }

size_t kafka_offsets_held(const kafka_offsets_t *t) { return t->held; }
