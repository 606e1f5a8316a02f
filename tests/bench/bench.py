#!/usr/bin/python3
"""bench.py — `make bench`: parley's worker side by side with the asyncio peer on one stack.

Starts one redis-server, one `parley dev` (embedded broker + two mock providers a/b) with every
topic the run needs, then runs each workload against `parley worker` and against the peer
(/work/shared/peers/asyncio_worker.py, or $PEER), one after the other. Only the worker process
is measured: CPU from /proc/PID/stat (utime+stime), RSS from /proc/PID/status, sampled every
BENCH_SAMPLE_MS (150). Every reply is checked (type final, status ok, a job id we sent, once)
before a run's figures count. Each run has its own jobs/reply topics, consumer group and key
prefix, and Redis is FLUSHALLed before it. Writes tests/bench/results/DATE.json and appends a
dated section to tests/bench/RESULTS.md.

Environment (defaults in brackets):
  BENCH_WORKLOADS [throughput,concurrency,latency,tail,scaleout,callgrind]  which to run
  BENCH_WORKERS [parley,peer]       BENCH_WARMUP [200] jobs before each measured phase
                                    (also parley-h1: parley with its providers on HTTP/1.1 through libcurl)
  BENCH_HTTP_VERSION [2]            llm.providers[].http_version of parley's runs (auto, 1.1 or 2)
  BENCH_STALL_S [60]                a run with no new reply for this long stops waiting (and is INVALID)
  throughput:  BENCH_TP_JOBS [20000] BENCH_TP_CONVS [2000] BENCH_TP_LAT_MS [200] BENCH_TP_MIF [2000]
  concurrency: BENCH_CONC_JOBS [20000] BENCH_CONC_MIF [10000] BENCH_CONC_LAT_MS [2000]
               BENCH_CONC_AT [10000] calls BENCH_CONC_PROVIDERS [1] (2 needs > 20,000 fds)
  latency:     BENCH_LAT_RATE [1000] jobs/s BENCH_LAT_SECS [30] BENCH_LAT_MS [100]
  tail:        BENCH_TAIL_RATE [200] BENCH_TAIL_SECS [15] BENCH_TAIL_MS [100] BENCH_TAIL_SLOW_MS [3000]
               BENCH_TAIL_PROB [0.05]
  scaleout:    BENCH_SO_JOBS [6000] BENCH_SO_PROCS [1,2,4] BENCH_SO_MIF [500] BENCH_SO_LAT_MS [1000]
  callgrind:   BENCH_CALLGRIND [1] BENCH_CG_JOBS [1000] BENCH_CG_LAT_MS [20]
               BENCH_CG_OUT [unset]  a path to keep the callgrind output (for callgrind_annotate)
  BENCH_FETCH_WAIT_MS [10]  fetch.wait.max.ms of both workers in the latency and tail workloads
  BENCH_PERF [0]  1: `perf record -e cpu-clock -g` of parley during the throughput run
  PARLEY (build/parley), PEER, BENCH_OUT (tests/bench)
"""
import datetime, json, os, shutil, signal, socket, subprocess, sys, tempfile
import threading, time, urllib.request

import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
PARLEY = os.environ.get("PARLEY", os.path.join(ROOT, "build", "parley"))
PEER = os.environ.get("PEER", os.path.abspath(os.path.join(ROOT, "..", "shared", "peers", "asyncio_worker.py")))
PY = "/usr/bin/python3"
CLK = os.sysconf("SC_CLK_TCK")
HTTP_VERSION = os.environ.get("BENCH_HTTP_VERSION", "2")
SAMPLE_S = int(os.environ.get("BENCH_SAMPLE_MS", "150")) / 1000


def env_int(name, default):
    return int(os.environ.get(name, default))


def env_list(name, default):
    return [x.strip() for x in os.environ.get(name, default).split(",") if x.strip()]


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(secs, pred, step=0.1):
    end = time.time() + secs
    while time.time() < end:
        try:
            if pred():
                return True
        except Exception:
            pass
        time.sleep(step)
    return False


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime, stime (fields 14, 15)


def proc_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def http_json(url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data is not None or url.endswith("/reset") else "GET")
    with urllib.request.urlopen(req, timeout=10) as r:
        raw = r.read()
    return json.loads(raw) if raw.strip() else {}


class Sampler(threading.Thread):
    """Samples CPU seconds and RSS of named processes every SAMPLE_S until stopped."""

    def __init__(self, pids, probe=None):
        super().__init__(daemon=True)
        self.pids, self.probe, self.samples, self.stop_ev = dict(pids), probe, [], threading.Event()

    def snap(self):
        s = {"t": time.time()}
        for name, pid in self.pids.items():
            try:
                s[name] = {"cpu": proc_cpu_s(pid), "rss": proc_kb(pid, "VmRSS")}
            except OSError:
                pass
        if self.probe:
            try:
                s["probe"] = self.probe()
            except Exception:
                pass
        return s

    def run(self):
        while not self.stop_ev.is_set():
            self.samples.append(self.snap())
            self.stop_ev.wait(SAMPLE_S)

    def stop(self):
        self.stop_ev.set()
        self.join()
        self.samples.append(self.snap())

    def peak_rss(self, name):
        return max((s[name]["rss"] for s in self.samples if name in s), default=0)


class Collector(threading.Thread):
    """Reads a reply topic from the beginning; keeps one record per final reply."""

    def __init__(self, brokers, topic):
        super().__init__(daemon=True)
        self.c = Consumer({"bootstrap.servers": brokers, "group.id": "bench-collect-" + topic,
                           "enable.auto.commit": False, "fetch.wait.max.ms": 10})
        parts = self.c.list_topics(topic, timeout=10).topics[topic].partitions
        self.c.assign([TopicPartition(topic, p, 0) for p in parts])
        self.finals, self.bad, self.dups, self.lock = {}, [], 0, threading.Lock()
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.is_set():
            for m in self.c.consume(500, 0.05):
                if m.error():
                    continue
                now = time.time()
                try:
                    v = json.loads(m.value())
                except ValueError:
                    self.bad.append("not json")
                    continue
                if v.get("type") != "final":
                    continue
                won = [a for a in v.get("attempts") or [] if a.get("outcome") == "won"]
                rec = {"status": v.get("status"), "recv": now, "kts": m.timestamp()[1] / 1000,
                       "total_ms": (v.get("timing") or {}).get("total_ms"),
                       "won_ms": won[0].get("latency_ms") if won else None, "provider": v.get("provider"),
                       "err": (v.get("error") or {}).get("code")}
                with self.lock:
                    if v.get("job_id") in self.finals:
                        self.dups += 1
                    else:
                        self.finals[v.get("job_id")] = rec
        self.c.close()

    def wait(self, prefix, n, timeout):
        """Until n finals of prefix came, timeout passed, or none came for BENCH_STALL_S (a worker that lost
        jobs would otherwise keep the run waiting for the whole timeout). True when all came."""
        stall = env_int("BENCH_STALL_S", 60)
        end, last_n, last_t = time.time() + timeout, -1, time.time()
        while time.time() < end:
            got = self.count(prefix)
            if got >= n:
                return True
            if got != last_n:
                last_n, last_t = got, time.time()
            elif time.time() - last_t > stall:
                log(f"{prefix}: no reply for {stall} s at {got} of {n}: giving up")
                return False
            time.sleep(0.05)
        return False

    def count(self, prefix):
        with self.lock:
            return sum(1 for k in self.finals if k and k.startswith(prefix))

    def stop(self):
        self.stop_ev.set()
        self.join()


class Stack:
    """redis-server + `parley dev` with every topic of the run; stopped by close()."""

    def __init__(self, topics):
        self.tmp = tempfile.mkdtemp(prefix="parley-bench.")
        self.procs = []
        self.redis_port = free_port()
        self.redis = self.spawn(["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir",
                                 self.tmp, "--save", "", "--appendonly", "no"], "redis.log")
        if not wait_until(10, lambda: self.rcli("ping") == "PONG"):
            raise SystemExit("redis-server did not start")
        ready = os.path.join(self.tmp, "ready.json")
        args = [PARLEY, "dev", "--ready-file", ready, "--write-config", os.path.join(self.tmp, "dev.yaml"),
                "--provider", "a:openai:latency_ms=200", "--provider", "b:anthropic:latency_ms=200"]
        for name, parts in topics:
            args += ["--topic", f"{name}:{parts}"]
        self.dev = self.spawn(args, "dev.log")
        if not wait_until(60, lambda: os.path.getsize(ready) > 0):
            raise SystemExit("parley dev did not become ready")
        self.ready = json.load(open(ready))
        self.brokers = self.ready["brokers"]
        self.base_cfg = yaml.safe_load(open(os.path.join(self.tmp, "dev.yaml")))

    def spawn(self, args, logname, env=None):
        p = subprocess.Popen(args, stdout=open(os.path.join(self.tmp, logname), "w"), stderr=subprocess.STDOUT,
                             env=env, start_new_session=True)
        self.procs.append(p)
        return p

    def rcli(self, *args):
        return subprocess.run(["redis-cli", "-p", str(self.redis_port), *args], capture_output=True,
                              text=True).stdout.strip()

    def mock(self, name, kind):
        return self.ready["providers"][name][kind]

    def control(self, **knobs):
        """Sets knobs on both mocks ({name: {knob: value}}) and resets their stats."""
        for name, k in knobs.items():
            http_json(self.mock(name, "control"), k)
            http_json(self.mock(name, "stats") + "/reset")

    def calls(self):
        """(provider requests, TCP connections accepted) summed over both mocks since their reset."""
        n = c = 0
        for name in ("a", "b"):
            st = http_json(self.mock(name, "stats"))
            n += st["requests"]["by_endpoint"]["chat_completions"] + st["requests"]["by_endpoint"]["messages"]
            c += st["connections"]["total"]
        return n, c

    def in_flight(self):
        return sum(http_json(self.mock(n, "stats"))["in_flight"]["now"] for n in ("a", "b"))

    def close(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def topics_of(run):
    return [(f"{run}.jobs", None), (f"{run}.replies", None), (f"{run}.dlq", 1)]


class Bench:
    def __init__(self, stack):
        self.s = stack
        self.producer = Producer({"bootstrap.servers": stack.brokers, "linger.ms": 2, "acks": "all",
                                  "queue.buffering.max.messages": 200000})

    def config(self, run, mif, providers=("a", "b"), strategy="race", routes=None, props=None):
        cfg = json.loads(json.dumps(self.s.base_cfg))
        k = cfg["kafka"]
        k.update(jobs_topic=f"{run}.jobs", reply_topic=f"{run}.replies", dlq_topic=f"{run}.dlq", group_id=f"g-{run}")
        k["properties"] = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "auto.offset.reset": "earliest",
                           **(props or {})}
        cfg["redis"] = {"url": f"redis://127.0.0.1:{self.s.redis_port}/0", "key_prefix": f"p-{run}"}
        cfg["llm"]["providers"] = [p for p in cfg["llm"]["providers"] if p["name"] in providers]
        for p in cfg["llm"]["providers"]:
            p["http_version"] = HTTP_VERSION  # parley's key; the peer ignores it (aiohttp speaks HTTP/1.1)
        cfg["llm"]["strategy"] = strategy
        if routes:
            cfg["llm"]["routes"] = routes
        cfg["worker"] = {"max_in_flight": mif}
        cfg["admin"] = {"listen": "off"}
        cfg["log"] = {"format": "text", "level": "info"}
        path = os.path.join(self.s.tmp, f"{run}.yaml")
        yaml.safe_dump(cfg, open(path, "w"), sort_keys=False)
        return path

    def start(self, kind, cfg, name, wrap=()):
        if kind == "parley-h1":  # the same parley with its providers on libcurl HTTP/1.1, for comparison
            doc = yaml.safe_load(open(cfg))
            for p in doc["llm"]["providers"]:
                p["http_version"] = "1.1"
            cfg = cfg[:-5] + "-h1.yaml"
            yaml.safe_dump(doc, open(cfg, "w"), sort_keys=False)
        if kind.startswith("parley"):
            args = [*wrap, PARLEY, "worker", "-c", cfg]
        else:
            args = [PY, PEER, "-c", cfg] + (["--uvloop"] if kind == "peer-uvloop" else [])
        return self.s.spawn(args, name + ".log")

    def stop(self, p, timeout=60):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait()

    def produce(self, topic, prefix, n, convs, rate=None, conv_prefix=None, sent=None):
        """Posts n jobs (conversation i % convs); at `rate` jobs/s with a token bucket when given."""
        cp = conv_prefix or prefix
        t0 = time.time()
        tokens, last = 0.0, t0
        for i in range(n):
            if rate:
                while tokens < 1:
                    now = time.time()
                    tokens = min(tokens + (now - last) * rate, max(1.0, rate / 100))
                    last = now
                    if tokens < 1:
                        time.sleep(max(0.0005, (1 - tokens) / rate))
                tokens -= 1
            c = f"{cp}-c{i % convs}"
            jid = f"{prefix}-j{i}"
            body = json.dumps({"job_id": jid, "conversation_id": c,
                               "message": {"role": "user", "content": f"Please answer question number {i} briefly."}})
            while True:
                try:
                    self.producer.produce(topic, value=body.encode(), key=c.encode())
                    break
                except BufferError:
                    self.producer.poll(0.01)
            if sent is not None:
                sent[jid] = time.time()
            self.producer.poll(0)
        self.producer.flush(60)
        return time.time() - t0

    def warm(self, run, col, n=None, timeout=120):
        n = env_int("BENCH_WARMUP", 200) if n is None else n
        if n:
            self.produce(f"{run}.jobs", f"{run}-warm", n, n)
            if not wait_until(timeout, lambda: col.count(f"{run}-warm") >= n):
                raise RuntimeError(f"{run}: warm-up got {col.count(run + '-warm')} of {n} replies")

    @staticmethod
    def check(col, prefix, n):
        """Every one of the n jobs has one final, status ok: returns (ok, problems)."""
        probs = []
        with col.lock:
            recs = {k: v for k, v in col.finals.items() if k and k.startswith(prefix + "-j")}
            bad = [(k, v["status"], v["err"]) for k, v in recs.items() if v["status"] != "ok"]
        if len(recs) != n:
            probs.append(f"{len(recs)} of {n} finals")
        if bad:
            probs.append(f"{len(bad)} not ok, e.g. {bad[:3]}")
        if col.dups:
            probs.append(f"{col.dups} duplicate finals")
        return not probs, probs, recs

    def measured(self, run, kind, cfg, n, convs, timeout, rate=None, probe=None, wrap=(), extra=None):
        """One run: start the worker, warm up, post n jobs, wait for n finals; returns the figures."""
        http_json(self.s.mock("a", "stats") + "/reset")
        http_json(self.s.mock("b", "stats") + "/reset")
        self.s.rcli("flushall")
        col = Collector(self.s.brokers, f"{run}.replies")
        col.start()
        w = self.start(kind, cfg, run, wrap)
        fig = {"worker": kind, "run": run}
        try:
            self.warm(run, col)
            idle_rss = proc_kb(w.pid, "VmRSS")
            pids = {"worker": w.pid, "dev": self.s.dev.pid, "redis": self.s.redis.pid}
            smp = Sampler(pids, probe)
            calls0 = self.s.calls()
            smp.start()
            if extra:
                extra(w, fig)
            sent = {}
            t0 = time.time()
            fig["produce_s"] = round(self.produce(f"{run}.jobs", run, n, convs, rate=rate, sent=sent), 2)
            done = col.wait(run + "-j", n, timeout)
            t1 = max([r["recv"] for r in col.finals.values()] or [time.time()]) if done else time.time()
            smp.stop()
            calls1 = self.s.calls()
            fig["calls"], fig["connections"] = calls1[0] - calls0[0], calls1[1] - calls0[1]
            ok, probs, recs = self.check(col, run, n)
            first, last = smp.samples[0], smp.samples[-1]
            secs = t1 - t0
            cpu = {k: last[k]["cpu"] - first[k]["cpu"] for k in pids if k in last and k in first}
            fig.update(valid=ok, problems=probs, jobs=n, seconds=round(secs, 2), jobs_per_s=round(n / secs, 1),
                       cpu_us_per_job=round(cpu["worker"] * 1e6 / n, 1),
                       cpu_s={k: round(v, 2) for k, v in cpu.items()},
                       cpu_util={k: round(v / secs, 3) for k, v in cpu.items()},
                       idle_rss_kb=idle_rss, peak_rss_kb=smp.peak_rss("worker"),
                       vmhwm_kb=proc_kb(w.pid, "VmHWM"), calls_per_job=round(fig["calls"] / n, 3),
                       new_connections_per_call=round(fig["connections"] / max(fig["calls"], 1), 3))
            lat = [r["total_ms"] - r["won_ms"] for r in recs.values() if r["total_ms"] is not None and r["won_ms"] is not None]
            e2e_k = [(r["kts"] - sent[k]) * 1000 for k, r in recs.items() if k in sent]
            e2e_r = [(r["recv"] - sent[k]) * 1000 for k, r in recs.items() if k in sent]
            tot = [r["total_ms"] for r in recs.values() if r["total_ms"] is not None]
            for name, vals in (("added_ms", lat), ("e2e_kafka_ts_ms", e2e_k), ("e2e_received_ms", e2e_r), ("total_ms", tot)):
                fig[name] = {"p50": pct(vals, 50), "p99": pct(vals, 99), "max": max(vals) if vals else None}
                if fig[name]["p50"] is not None:
                    fig[name] = {k: round(v, 2) for k, v in fig[name].items()}
            fig["samples"] = [{"t": round(s["t"] - t0, 2), "rss": s.get("worker", {}).get("rss"),
                               "probe": s.get("probe")} for s in smp.samples]
            if rate:
                fig["rate_target"], fig["rate_achieved"] = rate, round(n / fig["produce_s"], 1)
        finally:
            rc = self.stop(w)
            col.stop()
            fig["exit"] = rc
        log(f"{run}: " + json.dumps({k: v for k, v in fig.items() if k != "samples"}))
        return fig


def w_throughput(b, workers):
    n, convs = env_int("BENCH_TP_JOBS", 20000), env_int("BENCH_TP_CONVS", 2000)
    lat, mif = env_int("BENCH_TP_LAT_MS", 200), env_int("BENCH_TP_MIF", 2000)
    b.s.control(a={"latency_ms": lat, "tail_prob": 0}, b={"latency_ms": lat, "tail_prob": 0})
    out = {"params": {"jobs": n, "conversations": convs, "latency_ms": lat, "max_in_flight": mif, "providers": 2}}
    for kind in workers:
        run = f"tp-{kind}"
        perf = {}

        def start_perf(w, fig, kind=kind):
            if kind == "parley" and os.environ.get("BENCH_PERF") == "1" and shutil.which("perf"):
                perf["file"] = os.path.join(b.s.tmp, "perf.data")
                perf["p"] = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-g", "-p", str(w.pid),
                                              "-o", perf["file"]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out[kind] = b.measured(run, kind, b.config(run, mif), n, convs, 900, extra=start_perf)
        if perf:
            perf["p"].send_signal(signal.SIGINT)
            perf["p"].wait(60)
            for key, extra_args in (("perf_report", ["--no-children", "--percent-limit", "0.7"]),
                                    ("perf_by_dso", ["--no-children", "--sort", "dso"]),
                                    ("perf_by_thread", ["--no-children", "--sort", "comm"]),
                                    ("perf_children", ["--children", "--sort", "sym", "--percent-limit", "3"])):
                rep = subprocess.run(["perf", "report", "-i", perf["file"], "--stdio", "-g", "none", *extra_args],
                                     capture_output=True, text=True).stdout
                out[key] = [ln for ln in rep.splitlines() if ln.strip() and not ln.startswith("#")][:60]
    return out


def w_concurrency(b, workers):
    n, mif = env_int("BENCH_CONC_JOBS", 20000), env_int("BENCH_CONC_MIF", 10000)
    lat, at = env_int("BENCH_CONC_LAT_MS", 2000), env_int("BENCH_CONC_AT", 10000)
    provs = ("a", "b")[:env_int("BENCH_CONC_PROVIDERS", 1)]
    b.s.control(a={"latency_ms": lat, "tail_prob": 0}, b={"latency_ms": lat, "tail_prob": 0})
    out = {"params": {"jobs": n, "conversations": n, "latency_ms": lat, "max_in_flight": mif, "providers": len(provs),
                      "rss_at_calls": at}}
    for kind in workers:
        run = f"conc-{kind}"
        fig = b.measured(run, kind, b.config(run, mif, providers=provs), n, n, 900, probe=b.s.in_flight)
        pts = [s for s in fig["samples"] if s.get("probe") is not None and s.get("rss")]
        hit = next((s for s in pts if s["probe"] >= at), None)
        peak = max(pts, key=lambda s: (s["probe"], s["rss"]), default=None)
        fig["rss_kb_at_target"] = hit["rss"] if hit else None
        fig["calls_at_target_sample"] = hit["probe"] if hit else None
        fig["peak_calls"] = peak["probe"] if peak else None
        # per-call memory: the highest RSS among samples at >= `at` calls in flight; a worker that never
        # gets there (CPU-bound: the first calls return before it has started `at`) is measured at its peak
        plateau = [s for s in pts if s["probe"] >= at] if hit else [s for s in pts if peak and s["probe"] == peak["probe"]]
        if plateau:
            top = max(plateau, key=lambda s: s["rss"])
            fig["rss_kb_at_n"], fig["n_in_flight"], fig["reached_target"] = top["rss"], top["probe"], bool(hit)
            fig["per_call_bytes"] = round((top["rss"] - fig["idle_rss_kb"]) * 1024 / max(top["probe"], 1))
        out[kind] = fig
    return out


def latency_props():
    """The mock broker holds every fetch for fetch.wait.max.ms (500 ms by default) even when data is
    there, which would dominate end-to-end latency: the latency workloads lower it for both workers."""
    return {"fetch.wait.max.ms": env_int("BENCH_FETCH_WAIT_MS", 10)}


def w_latency(b, workers):
    rate, secs, lat = env_int("BENCH_LAT_RATE", 1000), env_int("BENCH_LAT_SECS", 30), env_int("BENCH_LAT_MS", 100)
    n = rate * secs
    b.s.control(a={"latency_ms": lat, "tail_prob": 0}, b={"latency_ms": lat, "tail_prob": 0})
    out = {"params": {"rate": rate, "seconds": secs, "latency_ms": lat, "jobs": n, "max_in_flight": 2000, "providers": 2}}
    for kind in workers:
        run = f"lat-{kind}"
        out[kind] = b.measured(run, kind, b.config(run, 2000, props=latency_props()), n, n // 4 or 1, secs + 300,
                               rate=rate)
    return out


TAIL_VARIANTS = ("single", "race", "hedge", "hedge-latency")


def w_tail(b, workers):
    rate, secs = env_int("BENCH_TAIL_RATE", 200), env_int("BENCH_TAIL_SECS", 15)
    lat, slow = env_int("BENCH_TAIL_MS", 100), env_int("BENCH_TAIL_SLOW_MS", 3000)
    prob = float(os.environ.get("BENCH_TAIL_PROB", "0.05"))
    n = rate * secs
    out = {"params": {"rate": rate, "seconds": secs, "jobs": n, "a": f"{lat} ms, {prob:.0%} at {slow} ms",
                      "b": f"{lat} ms steady", "max_in_flight": 2000}}
    hedge = {"strategy": "hedge", "providers": ["a", "b"], "hedge_delay_ms": "auto"}
    variants = [("single", ("a",), "race", None), ("race", ("a", "b"), "race", None),
                ("hedge", ("a", "b"), "hedge", {"default": hedge}),
                ("hedge-latency", ("a", "b"), "hedge", {"default": dict(hedge, hedge_order="latency")})]
    for vname, provs, strat, routes in variants:
        for kind in workers:
            if vname.startswith("hedge") and not kind.startswith("parley"):
                continue  # the peer has no hedging
            b.s.control(a={"latency_ms": lat, "tail_ms": slow, "tail_prob": prob, "seed": 7},
                        b={"latency_ms": lat, "tail_prob": 0})
            run = f"tail-{vname}-{kind}"
            cfg = b.config(run, 2000, provs, strat, routes, latency_props())
            out.setdefault(vname, {})[kind] = b.measured(run, kind, cfg, n, n, secs + 120, rate=rate)
    return out


def lag_of(brokers, group, topic):
    c = Consumer({"bootstrap.servers": brokers, "group.id": group, "enable.auto.commit": False})
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    tps = [TopicPartition(topic, p) for p in parts]
    committed = {tp.partition: tp.offset for tp in c.committed(tps, timeout=10)}
    lag = 0
    for p in parts:
        hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        lag += hi - max(committed.get(p, 0), 0)
    c.close()
    return lag


def w_scaleout(b, workers):
    n, mif, lat = env_int("BENCH_SO_JOBS", 6000), env_int("BENCH_SO_MIF", 500), env_int("BENCH_SO_LAT_MS", 1000)
    b.s.control(a={"latency_ms": lat, "tail_prob": 0}, b={"latency_ms": lat, "tail_prob": 0})
    out = {"params": {"jobs": n, "partitions": 16, "max_in_flight": mif, "latency_ms": lat, "providers": 2}}
    if "parley" not in workers:
        return out
    for k in (int(x) for x in env_list("BENCH_SO_PROCS", "1,2,4")):
        run = f"so{k}"
        cfg = b.config(run, mif)
        b.s.rcli("flushall")
        col = Collector(b.s.brokers, f"{run}.replies")
        col.start()
        ws = [b.start("parley", cfg, f"{run}-w{i}") for i in range(k)]
        fig = {"processes": k}
        try:
            logs = [os.path.join(b.s.tmp, f"{run}-w{i}.log") for i in range(k)]
            if not wait_until(60, lambda: all("partitions assigned" in open(p).read() for p in logs)):
                raise RuntimeError(f"{run}: not every worker got an assignment")
            time.sleep(3)  # let the cooperative rebalances settle
            b.warm(run, col, 64)
            time.sleep(1.5)
            pids = {f"w{i}": w.pid for i, w in enumerate(ws)}
            pids.update(dev=b.s.dev.pid, redis=b.s.redis.pid)
            smp = Sampler(pids, lambda: lag_of(b.s.brokers, f"g-{run}", f"{run}.jobs"))
            t0 = time.time()
            smp.start()
            b.produce(f"{run}.jobs", run, n, n)
            done = col.wait(run + "-j", n, 600)
            t1 = max(r["recv"] for r in col.finals.values()) if done else time.time()
            wait_until(10, lambda: lag_of(b.s.brokers, f"g-{run}", f"{run}.jobs") == 0, 0.2)
            smp.stop()
            ok, probs, _ = b.check(col, run, n)
            lags = [(s["t"] - t0, s["probe"]) for s in smp.samples if s.get("probe") is not None]
            peak_t, peak_lag = max(lags, key=lambda x: x[1])
            zero_t = next((t for t, lg in lags if t > peak_t and lg == 0), lags[-1][0])
            first, last = smp.samples[0], smp.samples[-1]
            fig.update(valid=ok, problems=probs, jobs=n, seconds=round(t1 - t0, 2), jobs_per_s=round(n / (t1 - t0), 1),
                       peak_lag=peak_lag, lag_drained_per_s=round(peak_lag / max(zero_t - peak_t, 1e-3), 1),
                       cpu_s={k2: round(last[k2]["cpu"] - first[k2]["cpu"], 2) for k2 in pids if k2 in last},
                       peak_rss_kb={f"w{i}": smp.peak_rss(f"w{i}") for i in range(k)})
            fig["cpu_us_per_job_all_workers"] = round(sum(fig["cpu_s"][f"w{i}"] for i in range(k)) * 1e6 / n, 1)
        finally:
            for w in ws:
                w.send_signal(signal.SIGTERM)
            fig["exit"] = [b.stop(w) for w in ws]
            col.stop()
        log(f"{run}: {json.dumps(fig)}")
        out[f"{k}"] = fig
    return out


def w_callgrind(b, workers):
    if os.environ.get("BENCH_CALLGRIND", "1") != "1" or not shutil.which("valgrind") or "parley" not in workers:
        return {"skipped": True}
    n, lat = env_int("BENCH_CG_JOBS", 1000), env_int("BENCH_CG_LAT_MS", 20)
    b.s.control(a={"latency_ms": lat, "tail_prob": 0}, b={"latency_ms": lat, "tail_prob": 0})
    run = "cg"
    outf = os.path.join(b.s.tmp, "callgrind.out")
    wrap = ("valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={outf}")

    def instr_on(w, fig):
        # valgrind's pid is the worker's pid (it execs in place)
        subprocess.run(["callgrind_control", "-i", "on", str(w.pid)], capture_output=True, timeout=60)
    t0 = time.time()
    fig = b.measured(run, "parley", b.config(run, 200), n, n // 10 or 1, 1200, wrap=wrap, extra=instr_on)
    ir = None
    for f in os.listdir(b.s.tmp):
        if f.startswith("callgrind.out"):
            if os.environ.get("BENCH_CG_OUT"):
                shutil.copy(os.path.join(b.s.tmp, f), os.environ["BENCH_CG_OUT"])
            for line in open(os.path.join(b.s.tmp, f)):
                if line.startswith(("summary:", "totals:")):
                    ir = (ir or 0) + int(line.split()[1])
                    break
    fig.pop("samples", None)
    return {"params": {"jobs": n, "latency_ms": lat, "max_in_flight": 200, "providers": 2},
            "instructions": ir, "instructions_per_job": round(ir / n) if ir else None,
            "wall_s": round(time.time() - t0, 1), "run": fig,
            "note": "instrumentation on from just before the first measured job to the worker's exit "
                    "(so the drain and shutdown are counted, the start-up and warm-up are not)"}


WORKLOADS = {"throughput": w_throughput, "concurrency": w_concurrency, "latency": w_latency, "tail": w_tail,
             "scaleout": w_scaleout, "callgrind": w_callgrind}


def all_topics(workloads, workers):
    t = []
    for w in workloads:
        kinds = list(workers)
        if w == "throughput":
            runs = [f"tp-{k}" for k in kinds]
        elif w == "concurrency":
            runs = [f"conc-{k}" for k in kinds]
        elif w == "latency":
            runs = [f"lat-{k}" for k in kinds]
        elif w == "tail":
            runs = [f"tail-{v}-{k}" for v in TAIL_VARIANTS for k in kinds]
        elif w == "scaleout":
            runs = [f"so{k}" for k in env_list("BENCH_SO_PROCS", "1,2,4")]
        else:
            runs = ["cg"]
        for r in runs:
            parts = 16 if w == "scaleout" else 6
            t += [(name, p or parts) for name, p in topics_of(r)]
    return t


def main():
    workloads = env_list("BENCH_WORKLOADS", "throughput,concurrency,latency,tail,scaleout,callgrind")
    workers = env_list("BENCH_WORKERS", "parley,peer")
    for w in workloads:
        if w not in WORKLOADS:
            raise SystemExit(f"unknown workload {w}")
    stamp = datetime.datetime.utcnow().strftime("%Y-%m-%dT%H%M%SZ")
    res = {"date": stamp, "cores": os.cpu_count(), "cpu_model": cpu_model(), "parley": PARLEY, "peer": PEER,
           "git_head": git_head(), "parley_mtime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.path.getmtime(PARLEY))),
           "workers": workers, "loadavg_start": open("/proc/loadavg").read().split()[:3], "workloads": {}}
    stack = Stack(all_topics(workloads, workers))
    outdir = os.environ.get("BENCH_OUT", HERE)
    os.makedirs(os.path.join(outdir, "results"), exist_ok=True)
    jpath = os.path.join(outdir, "results", stamp + ".json")
    try:
        b = Bench(stack)
        for w in workloads:
            log(f"workload {w}")
            t0 = time.time()
            try:
                res["workloads"][w] = WORKLOADS[w](b, workers)
            except Exception as e:  # one broken workload still leaves the others' figures
                log(f"workload {w} failed: {e!r}")
                res["workloads"][w] = {"error": repr(e)}
            res["workloads"][w]["wall_s"] = round(time.time() - t0, 1)
            json.dump(res, open(jpath, "w"), indent=1)
    finally:
        stack.close()
    res["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    json.dump(res, open(jpath, "w"), indent=1)
    sys.dont_write_bytecode = True  # no __pycache__ in the tree
    sys.path.insert(0, HERE)
    import report
    md = report.section(res, os.path.relpath(jpath, outdir))
    with open(os.path.join(outdir, "RESULTS.md"), "a") as f:
        f.write(md)
    print(md)
    bad = [w for w, v in res["workloads"].items() if "error" in v]
    return 1 if bad else 0


def git_head():
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def cpu_model():
    try:
        return next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        return "?"


if __name__ == "__main__":
    sys.exit(main())
