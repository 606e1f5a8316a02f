/* conv.c — per-conversation FIFO of jobs in a hash map keyed by conversation id. */
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "engine/engine_int.h"

#define CONV_MIN_BUCKETS 1024

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

int conv_map_init(conv_map_t *m)
{
    m->n_buckets = CONV_MIN_BUCKETS;
    m->count = 0;
    m->buckets = base_calloc(m->n_buckets, sizeof *m->buckets);
    return m->buckets ? 0 : -1;
}

void conv_map_free(conv_map_t *m)
{
    for (size_t i = 0; i < m->n_buckets; i++) {
        conv_t *c = m->buckets[i];
        while (c) {
            conv_t *next = c->next_in_bucket;
            free(c->id);
            free(c);
            c = next;
        }
    }
    free(m->buckets);
    m->buckets = NULL;
}

/* Doubles the table when it is fuller than one conversation per bucket. */
static void conv_map_grow(conv_map_t *m)
{
    size_t n = m->n_buckets * 2;
    conv_t **b = base_calloc(n, sizeof *b);
    if (!b)
        return; /* stays correct, only slower */
    for (size_t i = 0; i < m->n_buckets; i++) {
        conv_t *c = m->buckets[i];
        while (c) {
            conv_t *next = c->next_in_bucket;
            c->next_in_bucket = b[c->hash & (n - 1)];
            b[c->hash & (n - 1)] = c;
            c = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->n_buckets = n;
}

int conv_enqueue(conv_map_t *m, ejob_t *j, const char *id, size_t id_len)
{
    uint64_t h = fnv1a(id, id_len);
    conv_t *c = m->buckets[h & (m->n_buckets - 1)];
    while (c && !(c->hash == h && c->id_len == id_len && memcmp(c->id, id, id_len) == 0))
        c = c->next_in_bucket;
    if (!c) {
        c = base_calloc(1, sizeof *c);
        if (!c)
            return -1;
        c->id = base_strndup(id, id_len);
        if (!c->id) {
            free(c);
            return -1;
        }
        c->id_len = id_len;
        c->hash = h;
        c->next_in_bucket = m->buckets[h & (m->n_buckets - 1)];
        m->buckets[h & (m->n_buckets - 1)] = c;
        if (++m->count > m->n_buckets)
            conv_map_grow(m);
    }
    j->conv = c;
    j->next_in_conv = NULL;
    if (c->tail) {
        c->tail->next_in_conv = j;
        c->tail = j;
        return 0;
    }
    c->head = c->tail = j;
    return 1;
}

ejob_t *conv_dequeue(conv_map_t *m, ejob_t *j)
{
    conv_t *c = j->conv;
    if (!c)
        return NULL;
    j->conv = NULL;
    if (c->head != j) { /* an abandoned job leaving from the middle of the queue */
        ejob_t *p = c->head;
        while (p && p->next_in_conv != j)
            p = p->next_in_conv;
        if (p) {
            p->next_in_conv = j->next_in_conv;
            if (c->tail == j)
                c->tail = p;
        }
        return NULL;
    }
    c->head = j->next_in_conv;
    if (c->head)
        return c->head;
    c->tail = NULL;
    conv_t **pp = &m->buckets[c->hash & (m->n_buckets - 1)];
    while (*pp != c)
        pp = &(*pp)->next_in_bucket;
    *pp = c->next_in_bucket;
    m->count--;
    free(c->id);
    free(c);
    return NULL;
}
