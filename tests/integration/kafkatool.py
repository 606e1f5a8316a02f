#!/usr/bin/python3
"""kafkatool — the integration tests' Kafka client (Debian's python3-confluent-kafka).

  kafkatool.py produce  -b BROKERS -t TOPIC FILE      JSONL lines {"key","value","headers"}; value
                                                       may be an object (sent as JSON) or a string
  kafkatool.py collect  -b BROKERS -t TOPIC -n N [--timeout S] [--finals] OUT
                        reads TOPIC from the beginning (no group) until N messages (with --finals:
                        N distinct final replies by job_id) or the timeout; writes JSONL
                        {"key","headers","value","partition","offset"}; exit 1 if fewer came
  kafkatool.py committed -b BROKERS -g GROUP -t TOPIC  prints {"partition": committed offset} JSON
  kafkatool.py end-offsets -b BROKERS -t TOPIC         prints {"partition": high watermark} JSON
"""
import argparse, json, sys, time

from confluent_kafka import Consumer, Producer, TopicPartition


def produce(a):
    p = Producer({"bootstrap.servers": a.brokers, "linger.ms": 5, "enable.idempotence": True})
    failed = []
    def dr(err, msg):
        if err:
            failed.append(str(err))
    n = 0
    with open(a.file, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            value = rec["value"]
            if not isinstance(value, str):
                value = json.dumps(value)
            value = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
            if rec.get("value_hex") is not None:
                value = bytes.fromhex(rec["value_hex"])
            headers = [(k, v.encode()) for k, v in (rec.get("headers") or {}).items()]
            key = rec.get("key")
            while True:
                try:
                    p.produce(a.topic, value=value, key=key.encode() if key is not None else None,
                              headers=headers or None, on_delivery=dr)
                    break
                except BufferError:
                    p.poll(0.05)
            n += 1
            p.poll(0)
    left = p.flush(30)
    if failed or left:
        print(f"produce: {len(failed)} failed, {left} undelivered: {failed[:3]}", file=sys.stderr)
        sys.exit(1)
    print(f"produced {n}", file=sys.stderr)


def partitions_of(c, topic):
    md = c.list_topics(topic, timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        raise SystemExit(f"topic {topic} not found")
    return sorted(t.partitions)


def collect(a):
    c = Consumer({"bootstrap.servers": a.brokers, "group.id": "kafkatool-collect", "enable.auto.commit": False})
    c.assign([TopicPartition(a.topic, p, 0) for p in partitions_of(c, a.topic)])
    out, finals = [], set()
    deadline = time.time() + a.timeout
    def enough():
        return len(finals) >= a.n if a.finals else len(out) >= a.n
    while not enough() and time.time() < deadline:
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        raw = m.value() or b""
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw.decode("utf-8", "replace")
        rec = {"key": m.key().decode() if m.key() is not None else None,
               "headers": {k: (v or b"").decode("utf-8", "replace") for k, v in (m.headers() or [])},
               "value": value, "partition": m.partition(), "offset": m.offset()}
        out.append(rec)
        if isinstance(value, dict) and value.get("type") == "final":
            finals.add(value.get("job_id"))
    c.close()
    with open(a.out, "w") as f:
        for r in out:
            f.write(json.dumps(r) + "\n")
    if not enough():
        print(f"collect: only {len(out)} messages ({len(finals)} finals) of {a.n} in {a.timeout}s", file=sys.stderr)
        sys.exit(1)


def committed(a):
    c = Consumer({"bootstrap.servers": a.brokers, "group.id": a.group, "enable.auto.commit": False})
    parts = [TopicPartition(a.topic, p) for p in partitions_of(c, a.topic)]
    res = c.committed(parts, timeout=10)
    print(json.dumps({str(tp.partition): tp.offset for tp in res}))
    c.close()


def end_offsets(a):
    c = Consumer({"bootstrap.servers": a.brokers, "group.id": "kafkatool-offsets"})
    res = {}
    for p in partitions_of(c, a.topic):
        lo, hi = c.get_watermark_offsets(TopicPartition(a.topic, p), timeout=10)
        res[str(p)] = hi
    print(json.dumps(res))
    c.close()


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("produce"); s.add_argument("-b", "--brokers", required=True)
    s.add_argument("-t", "--topic", required=True); s.add_argument("file")
    s = sub.add_parser("collect"); s.add_argument("-b", "--brokers", required=True)
    s.add_argument("-t", "--topic", required=True); s.add_argument("-n", type=int, required=True)
    s.add_argument("--timeout", type=float, default=60); s.add_argument("--finals", action="store_true")
    s.add_argument("out")
    s = sub.add_parser("committed"); s.add_argument("-b", "--brokers", required=True)
    s.add_argument("-g", "--group", required=True); s.add_argument("-t", "--topic", required=True)
    s = sub.add_parser("end-offsets"); s.add_argument("-b", "--brokers", required=True)
    s.add_argument("-t", "--topic", required=True)
    a = ap.parse_args()
    {"produce": produce, "collect": collect, "committed": committed, "end-offsets": end_offsets}[a.cmd](a)


if __name__ == "__main__":
    main()
