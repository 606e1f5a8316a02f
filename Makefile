# parley — build, test, demo. `make test` and `make demo` install missing Debian packages first.
SHELL := /bin/bash
.DEFAULT_GOAL := all

BUILD   ?= build
CC      ?= cc
PKGS    := rdkafka hiredis libcurl libcjson yaml-0.1 libuv libmicrohttpd openssl libnghttp2
DEB_PKGS := build-essential pkg-config clang clang-format librdkafka-dev libhiredis-dev libnghttp2-dev libmimalloc-dev \
            libcurl4-openssl-dev libcjson-dev libyaml-dev libuv1-dev libmicrohttpd-dev \
            redis-server kcat libcmocka-dev libssl-dev openssl strace valgrind curl unzip chromium \
            python3 python3-yaml python3-confluent-kafka python3-prometheus-client

# Lazily expanded, so that a sub-make started after `deps` sees the installed packages.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter -Wno-format-truncation
OPT     ?= -O2 -g
ifneq ($(filter asan,$(MAKECMDGOALS)),)
BUILD   := build-asan
OPT     := -O1 -g -fno-omit-frame-pointer
SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
endif
VERSION := 0.1.0
SAN     ?=
CFLAGS  += -std=c11 -D_GNU_SOURCE -DPARLEY_VERSION=\"$(VERSION)\" -Iinternal $(WARN) $(OPT) $(SAN) $(PKG_CFLAGS)
LDLIBS  += $(PKG_LIBS) -lpthread -lm
# The worker binary allocates with mimalloc (Debian's libmimalloc): ~19 % less CPU per job than glibc's
# malloc in the throughput benchmark (its 1-4 KB request and reply buffers). Linked first and kept
# although nothing names it, so that every library's malloc resolves to it. Not under the sanitizers
# (they bring their own allocator); unit tests and fuzz targets use glibc's.
ALLOC_LIBS = $(if $(SAN),,-Wl,--push-state,--no-as-needed -lmimalloc -Wl,--pop-state)

# Modules, lowest first. Every internal/<m>/*.c becomes part of build/lib/lib<m>.a.
MODULES := base json tls log config metrics job http llm store limits kafka router engine admin replay dev
LIBS     = $(foreach m,$(MODULES),$(if $(wildcard internal/$(m)/*.c),$(BUILD)/lib/lib$(m).a))
LINK_LIBS = -Wl,--start-group $(LIBS) -Wl,--end-group

SRC := $(wildcard internal/*/*.c cmd/parley/*.c)
OBJ := $(SRC:%.c=$(BUILD)/%.o)
DEP := $(OBJ:.o=.d)

UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_BINS  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/unit/%)
INTEG_TESTS := $(sort $(wildcard tests/integration/[0-9]*.sh))

.PHONY: all deps test test-unit test-integration test-faults demo lint asan clean bench bench-deps fuzz format

all: $(BUILD)/parley

Q := $(if $(V),,@)

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

define module_lib
$(BUILD)/lib/lib$(1).a: $(patsubst %.c,$(BUILD)/%.o,$(wildcard internal/$(1)/*.c))
	@mkdir -p $$(@D)
	$(Q)rm -f $$@ && ar rcs $$@ $$^
endef
$(foreach m,$(MODULES),$(if $(wildcard internal/$(m)/*.c),$(eval $(call module_lib,$(m)))))

CMD_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard cmd/parley/*.c))
$(BUILD)/parley: $(CMD_OBJ) $(LIBS)
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CC) $(CFLAGS) -o $@ $(CMD_OBJ) $(ALLOC_LIBS) $(LINK_LIBS) $(LDLIBS)

# A unit test links only the module archives it needs (UNIT_DEPS_<m>; default: every module).
UNIT_DEPS_json    := json base
UNIT_DEPS_tls     := tls log base
UNIT_DEPS_base    := log base
UNIT_DEPS_log     := log base
UNIT_DEPS_config  := config log base
UNIT_DEPS_metrics := metrics log base
UNIT_DEPS_job     := job json log base
UNIT_DEPS_http    := http tls log base
UNIT_DEPS_llm     := llm json http tls log base
UNIT_DEPS_store   := store tls log base
UNIT_DEPS_limits  := limits store tls log base
UNIT_DEPS_replay  := replay job json log base
UNIT_DEPS_admin   := admin metrics log base
UNIT_DEPS_kafka   := kafka log base
UNIT_DEPS_dev     := dev log base
unit_libs = $(foreach m,$(or $(UNIT_DEPS_$(1)),$(MODULES)),$(if $(wildcard internal/$(m)/*.c),$(BUILD)/lib/lib$(m).a))

.SECONDEXPANSION:
$(BUILD)/tests/unit/test_%: tests/unit/test_%.c $$(call unit_libs,$$*)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  TEST    $@")
	$(Q)$(CC) $(CFLAGS) -Itests/unit -o $@ $< -Wl,--start-group $(call unit_libs,$*) -Wl,--end-group $(LDLIBS) -lcmocka

deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	fi

# Runs both suites even when the first fails, then prints the total: "total: N passed, N failed".
test: deps
	@rm -f $(BUILD)/test-counts; mkdir -p $(BUILD); rc=0; \
	$(MAKE) --no-print-directory BUILD=$(BUILD) OPT="$(OPT)" SAN="$(SAN)" TEST_COUNTS=$(abspath $(BUILD))/test-counts test-unit || rc=1; \
	$(MAKE) --no-print-directory BUILD=$(BUILD) OPT="$(OPT)" SAN="$(SAN)" TEST_COUNTS=$(abspath $(BUILD))/test-counts test-integration || rc=1; \
	awk '{p += $$1; f += $$2} END {printf "total: %d passed, %d failed\n", p, f + 0}' $(BUILD)/test-counts 2>/dev/null || echo "total: 0 passed, 1 failed"; \
	exit $$rc

test-unit: $(BUILD)/parley $(UNIT_BINS)
	@TEST_COUNTS=$(TEST_COUNTS) bash tests/run-unit.sh $(UNIT_BINS)

test-integration: $(BUILD)/parley
	@TEST_COUNTS=$(TEST_COUNTS) PARLEY=$(abspath $(BUILD)/parley) bash tests/run-integration.sh $(INTEG_TESTS)

# Fault tests (crash, rebalance storm, Redis outage, broker and provider faults, poison flood).
test-faults: deps
	@$(MAKE) --no-print-directory BUILD=$(BUILD) OPT="$(OPT)" SAN="$(SAN)" all
	@PARLEY=$(abspath $(BUILD)/parley) bash tests/faults/run.sh

demo: deps
	@$(MAKE) --no-print-directory BUILD=$(BUILD) OPT="$(OPT)" SAN="$(SAN)" all
	@PARLEY=$(abspath $(BUILD)/parley) bash tests/demo.sh

# Benchmarks: figures of this machine, never part of `make test`.
# `make bench`: parley vs the asyncio peer on one stack (tests/bench/bench.py; knobs BENCH_* in its header).
BENCH_PKGS := python3-aiohttp python3-redis python3-confluent-kafka python3-yaml python3-uvloop
bench-deps:
	@missing=; for p in $(BENCH_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "apt-get install$$missing"; apt-get install -y -q $$missing >/dev/null; fi
bench: deps bench-deps
	@$(MAKE) --no-print-directory all
	@PARLEY=$(abspath $(BUILD)/parley) /usr/bin/python3 tests/bench/bench.py

# libFuzzer targets (clang): tests/fuzz/fuzz_<name>.c linked with the modules it exercises.
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := config job sse llm_response json
FUZZ_MODULES_config       := config log base
FUZZ_MODULES_job          := job json log base
FUZZ_MODULES_sse          := llm json log base
FUZZ_MODULES_llm_response := llm json log base
FUZZ_MODULES_json         := json base
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE -DPARLEY_VERSION=\"$(VERSION)\" -Iinternal -g -O1 \
              -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined $(PKG_CFLAGS)
build-fuzz/fuzz_%: tests/fuzz/fuzz_%.c $$(foreach m,$$(FUZZ_MODULES_$$*),$$(wildcard internal/$$(m)/*.c))
	@mkdir -p $(@D)
	@echo "  FUZZ    $@"
	$(Q)clang $(FUZZ_CFLAGS) -o $@ $< $(foreach m,$(FUZZ_MODULES_$*),$(wildcard internal/$(m)/*.c)) $(LDLIBS)

fuzz: deps
	@$(MAKE) --no-print-directory $(FUZZ_TARGETS:%=build-fuzz/fuzz_%)
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p build-fuzz/corpus-$$t; \
	  dict=$$(test -f tests/fuzz/$$t.dict && echo -dict=tests/fuzz/$$t.dict); \
	  echo "fuzz $$t: $(FUZZ_SECONDS) s"; \
	  build-fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $$dict \
	    build-fuzz/corpus-$$t tests/fuzz/corpus/$$t 2>build-fuzz/fuzz_$$t.log || { tail -40 build-fuzz/fuzz_$$t.log; exit 1; }; \
	  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" build-fuzz/fuzz_$$t.log | sed "s/^/  $$t /"; \
	done

# `make asan` builds with ASan+UBSan into build-asan; `make asan test` runs the suites on that build.
asan:
	@$(if $(filter-out asan,$(MAKECMDGOALS)),:,$(MAKE) --no-print-directory BUILD=$(BUILD) OPT="$(OPT)" SAN="$(SAN)" all)

lint:
	@bash tests/lint.sh

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan build-fuzz

-include $(DEP)
