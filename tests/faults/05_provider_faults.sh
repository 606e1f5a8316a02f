#!/usr/bin/env bash
# 05_provider_faults.sh — one mock provider per fault: 503, 429 with Retry-After, connection refused
# (a closed port), TLS failure (https:// to a plain-HTTP server: the dev stack's broker control,
# which answers the ClientHello with 400 as most HTTP servers do; the mock provider instead waits for
# a complete request head, so the attempt would only time out), 200 with a body that is not JSON,
# JSON cut after 20 bytes, an SSE stream cut after 3 tokens, a one-byte-per-second drip (beyond the
# provider's timeout), an answer larger than llm.max_response_bytes. For each fault F, route F_fb
# (fallback [F, good]) ends ok through good with F's attempt ending with the right outcome and a
# reason; route F_only ([F]) ends all_providers_failed with that attempt. Then 400 jobs against the
# oversized answers, worker RSS bounded.
. "$(dirname "$0")/lib.sh"

PAD=$((2 * 1024 * 1024)) MAXRESP=$((256 * 1024))
start_redis
start_dev --partitions 4 --provider good:openai:latency_ms=20 \
    --provider e5xx:openai:fail_rate=1,fail_status=503,retry_after_s=0 \
    --provider e429:openai:fail_rate=1,fail_status=429,retry_after_s=1 \
    --provider nojson:openai:not_json=1 --provider trunc:anthropic:cut_after=20 \
    --provider ssecut:openai:cut_after=3,token_ms=20 --provider drip:openai:drip_ms=1000 \
    --provider big:openai:pad_bytes=$PAD
make_config "$T/w.yaml" llm.max_response_bytes=$MAXRESP worker.max_in_flight=100
CLOSED=$(free_port)
$PY - "$T/w.yaml" "$CLOSED" "$(dev_field '["broker_control"]')/v1" <<'PYEOF'
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
closed, plain_url = sys.argv[2], sys.argv[3]
provs = cfg["llm"]["providers"]
for p in provs:
    p["max_retries"] = 1 if p["name"] == "e429" else 0
    p["timeout_ms"] = 3000
provs.append({"name": "refused", "type": "openai", "base_url": f"http://127.0.0.1:{closed}/v1",
              "api_key": "dev-key", "model": "gpt-4o-mini", "max_retries": 0, "timeout_ms": 3000})
provs.append({"name": "tls", "type": "openai", "base_url": plain_url.replace("http://", "https://"),
              "api_key": "dev-key", "model": "gpt-4o-mini", "max_retries": 0, "timeout_ms": 3000})
routes = {"default": {"providers": ["good"]}}
for p in provs:
    if p["name"] != "good":
        routes[p["name"] + "_fb"] = {"strategy": "fallback", "providers": [p["name"], "good"]}
        routes[p["name"] + "_only"] = {"strategy": "fallback", "providers": [p["name"]]}
cfg["llm"]["routes"] = routes
yaml.safe_dump(cfg, open(sys.argv[1], "w"), sort_keys=False)
PYEOF
FAULTS="e5xx e429 refused tls nojson trunc ssecut drip big"
$PY - "$T/jobs.jsonl" $FAULTS <<'PYEOF'
import json, sys
with open(sys.argv[1], "w") as f:
    for fault in sys.argv[2:]:
        for kind in ("fb", "only"):
            conv = f"pf-{fault}-{kind}"
            job = {"job_id": conv, "conversation_id": conv, "route": f"{fault}_{kind}",
                   "message": {"role": "user", "content": f"fault {fault}"}}
            if fault == "ssecut":
                job["stream"] = True
            f.write(json.dumps({"key": conv, "value": job}) + "\n")
PYEOF
start_worker w1 "$T/w.yaml"; W=$WORKER_PID
wait_assigned w1
produce "$T/jobs.jsonl"
collect_finals 18 "$T/replies.jsonl" 60 || fail "provider-fault jobs not answered"
$FC summary provider_faults "$T/jobs.jsonl" "$T/replies.jsonl" --allow all_providers_failed || fail "summary"
$PY - "$T/replies.jsonl" "$(calls e429)" <<'PYEOF' || fail "provider fault outcomes"
import json, re, sys
msgs = [json.loads(l)["value"] for l in open(sys.argv[1])]
finals = {v["job_id"]: v for v in msgs if v.get("type") == "final"}
# fault → (outcome, http_status or None, a regex the reason must match)
expect = {
    "e5xx": ("error", 503, r"503|server|unavailable"),
    "e429": ("error", 429, r"429|rate"),
    "refused": ("error", None, r"(?i)connect|refused"),
    "tls": ("error", None, r"(?i)ssl|tls"),
    "nojson": ("error", 200, r"(?i)json|parse|invalid"),
    "trunc": ("error", None, r"(?i)json|parse|truncat|incomplete|closed|partial|transfer"),
    "ssecut": ("error", None, r"(?i)stream|end|cut|closed|done|incomplete|partial|transfer"),
    "drip": ("timeout", None, r"(?i)time"),
    "big": ("error", None, r"(?i)large|size|limit|max_response"),
}
for fault, (outcome, status, why) in expect.items():
    for kind in ("fb", "only"):
        v = finals[f"pf-{fault}-{kind}"]
        a = [x for x in v["attempts"] if x["provider"] == fault]
        assert len(a) == 1, (fault, kind, v["attempts"])
        a = a[0]
        print(f"{fault:8} {kind:4}: status={v['status']:5} {v.get('error', {}).get('code', ''):20} "
              f"attempt outcome={a['outcome']} http={a.get('http_status')} latency={a.get('latency_ms')} "
              f"reason={a.get('reason')!r}")
        assert a["outcome"] == outcome, (fault, a)
        assert a.get("http_status") == status or (status is None and a.get("http_status") in (None, 200)), (fault, a)
        assert a.get("reason") and re.search(why, a["reason"]), (fault, a)
        if kind == "fb":
            assert v["status"] == "ok" and v["provider"] == "good", (fault, v)
            assert v["message"]["content"].startswith("[good]"), v
        else:
            assert v["status"] == "error" and v["error"]["code"] == "all_providers_failed", (fault, v)
            assert "message" not in v
# 429: one retry per job, after the Retry-After second.
assert int(sys.argv[2]) == 4, f"e429 calls {sys.argv[2]} (2 jobs x 2 tries expected)"
lat = [a["latency_ms"] for v in finals.values() for a in v["attempts"] if a["provider"] == "e429"]
assert all(l >= 1000 for l in lat), f"Retry-After not honoured: {lat}"
# The cut stream: deltas from ssecut, then a reset, then good's deltas; the final is good's.
seq = [v for v in msgs if v.get("job_id") == "pf-ssecut-fb"]
kinds = [v["type"] for v in seq]
assert "reset" in kinds and kinds[-1] == "final", kinds
after = seq[kinds.index("reset") + 1:-1]
assert after and all(d["provider"] == "good" for d in after), after
assert "".join(d["delta"] for d in after) == finals["pf-ssecut-fb"]["message"]["content"]
print("all provider faults end their attempt with the right outcome")
PYEOF
pass "provider fault outcomes"

# Memory: 400 jobs against 2 MiB answers (limit 256 KiB), falling back to good.
$FC jobs "$T/big.jsonl" 400 --prefix pfbig --field 'route="big_fb"'
: >"$T/rss.txt"
sample_rss "$W" "$T/rss.txt"
base=$(awk '/VmRSS/ {print $2}' "/proc/$W/status")
produce "$T/big.jsonl"
collect_finals 418 "$T/r2.jsonl" 120 || fail "oversized-answer jobs not answered"
sleep 2
collect_all "$T/all2.jsonl"
$FC summary provider_big_flood "$T/big.jsonl" "$T/all2.jsonl" || fail "big flood"
peak=$(sort -n "$T/rss.txt" | tail -n 1)
echo "worker RSS before ${base} KB, peak ${peak} KB over $(wc -l <"$T/rss.txt") samples"
check "worker RSS bounded (peak $peak KB ≤ $base + 48 MiB: 100 jobs × 256 KiB at most)" test "$peak" -le $((base + 48 * 1024))
kill -0 "$W" || fail "worker died"
stop_worker "$W"
check "worker exited 0 (rc=$STOP_RC)" test "$STOP_RC" -eq 0
