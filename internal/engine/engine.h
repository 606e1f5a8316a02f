/* engine — the worker: one libuv loop that takes jobs from Kafka, answers each through Redis and the
 * providers, and publishes the reply (DESIGN.md "The flow of one job"). Each Kafka message becomes
 * one job state machine; jobs of one conversation run one at a time in offset order, others run
 * concurrently up to worker.max_in_flight, above which consumption pauses. A job is finished only
 * when its reply's (or dead letter's) delivery report arrived; only then may its offset be committed.
 * It owns the loop and every client on it (consumer, producer, store, http, router, admin).
 * It never blocks the loop, never drops a job without a reply or a dead letter, and never logs a
 * secret. */
#ifndef PARLEY_ENGINE_H
#define PARLEY_ENGINE_H

#include "config/config.h"

/* Runs a worker until SIGTERM/SIGINT (drain in-flight jobs, commit, exit 0) or a fatal error.
 * Returns the process exit code: 0 after a clean drain, 1 on a runtime failure or a second signal. */
int engine_worker_run(const config_t *cfg);

#endif
