# tlsrelay - build, test, run, install.
#
#   make            build ./tlsrelay (needs the -dev packages; `make deps` installs them)
#   make run        install missing packages, build, make dev certificates, run in the foreground
#   make test       install missing packages, build with ASan+UBSan, run unit and integration tests
#   make fuzz       build the libFuzzer targets and run each for FUZZ_SECONDS
#   make install    PREFIX=/usr/local DESTDIR=
#
# Objects for the normal build go to build/, the sanitizer build to build/asan/,
# fuzzers to build/fuzz/.  Every .c file under relay/, policy/ and certs/ is part
# of the daemon; relay/main.c holds main() and is left out of the unit tests.

PREFIX  ?= /usr/local
DESTDIR ?=
CC      ?= cc
CFLAGS  ?= -O2 -g
FUZZ_SECONDS ?= 30
PKGS    = libevent_core libevent_openssl libevent_extra openssl libunbound inih ldns jansson zlib

# Recursive (=) on purpose: evaluated at use, after `deps` may have installed them.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS))
WARN       = -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -Wshadow -Wformat=2 \
             -Wno-format-nonliteral
INCS       = -I. 
ASAN       = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

SRCS      := $(sort $(wildcard relay/*.c policy/*.c certs/*.c))
LIB_SRCS  := $(filter-out relay/main.c,$(SRCS))
UNIT_SRCS := $(sort $(wildcard tests/unit/test_*.c))
FUZZ_SRCS := $(sort $(wildcard tests/fuzz/fuzz_*.c))

OBJS      := $(patsubst %.c,build/%.o,$(LIB_SRCS))
AOBJS     := $(patsubst %.c,build/asan/%.o,$(LIB_SRCS))
UNITS     := $(patsubst tests/unit/%.c,build/asan/tests/%,$(UNIT_SRCS))
FUZZERS   := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(FUZZ_SRCS))

.PHONY: all deps deps-test certs run test unit integration fuzz fuzz-build install clean demo

all: tlsrelay

deps:
	@scripts/install-deps.sh build

deps-test:
	@scripts/install-deps.sh test

build/%.o: %.c $(wildcard relay/*.h policy/*.h certs/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) $(INCS) $(PKG_CFLAGS) -c -o $@ $<

build/asan/%.o: %.c $(wildcard relay/*.h policy/*.h certs/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(WARN) -O1 -g $(ASAN) $(INCS) $(PKG_CFLAGS) -c -o $@ $<

build/libtlsrelay.a: $(OBJS)
	@rm -f $@
	ar rcs $@ $^

build/asan/libtlsrelay.a: $(AOBJS)
	@rm -f $@
	ar rcs $@ $^

tlsrelay: build/relay/main.o build/libtlsrelay.a
	$(CC) $(CFLAGS) -o $@ $^ $(PKG_LIBS) -lm

build/asan/tlsrelay: build/asan/relay/main.o build/asan/libtlsrelay.a
	$(CC) $(ASAN) -o $@ $^ $(PKG_LIBS) -lm

build/asan/tests/%: tests/unit/%.c build/asan/libtlsrelay.a
	@mkdir -p $(dir $@)
	$(CC) $(WARN) -O1 -g $(ASAN) $(INCS) $(PKG_CFLAGS) -o $@ $< build/asan/libtlsrelay.a \
		$(PKG_LIBS) $(shell pkg-config --libs cmocka) -lm

certs: certs/dev/relay.crt

certs/dev/relay.crt: certs/mkcerts.sh
	certs/mkcerts.sh certs/dev

relay.ini: relay.ini.example
	cp relay.ini.example relay.ini

run: deps
	$(MAKE) tlsrelay certs relay.ini
	./tlsrelay -f -c relay.ini

unit: $(UNITS)
	@fail=0; for t in $(UNITS); do echo "== $$t"; $$t || fail=1; done; exit $$fail

integration: build/asan/tlsrelay
	TLSRELAY_BIN=$(CURDIR)/build/asan/tlsrelay /usr/bin/python3 -m pytest -q tests/integration

test: deps-test
	$(MAKE) tlsrelay build/asan/tlsrelay $(UNITS)
	$(MAKE) unit
	$(MAKE) integration

build/fuzz/%: tests/fuzz/%.c $(LIB_SRCS)
	@mkdir -p $(dir $@)
	clang $(WARN) -O1 -g -fsanitize=fuzzer,address,undefined $(INCS) $(PKG_CFLAGS) \
		-o $@ $< $(LIB_SRCS) $(PKG_LIBS) -lm

fuzz-build: $(FUZZERS)

fuzz: deps-test
	$(MAKE) fuzz-build
	@for f in $(FUZZERS); do n=$$(basename $$f); mkdir -p build/fuzz/corpus-$$n; \
		echo "== $$n ($(FUZZ_SECONDS)s)"; \
		$$f -max_total_time=$(FUZZ_SECONDS) build/fuzz/corpus-$$n tests/fuzz/corpus/$$n \
			> build/fuzz/$$n.log 2>&1; rc=$$?; tail -3 build/fuzz/$$n.log; \
		[ $$rc -eq 0 ] || { echo "$$n: FAILED (build/fuzz/$$n.log)"; exit 1; }; done

install: tlsrelay
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/share/doc/tlsrelay \
		$(DESTDIR)$(PREFIX)/share/man/man8 $(DESTDIR)$(PREFIX)/share/man/man5 \
		$(DESTDIR)$(PREFIX)/lib/systemd/system
	install -m 755 tlsrelay $(DESTDIR)$(PREFIX)/sbin/tlsrelay
	install -m 644 relay.ini.example README.md $(DESTDIR)$(PREFIX)/share/doc/tlsrelay/
	install -m 644 docs/tlsrelay.8 $(DESTDIR)$(PREFIX)/share/man/man8/tlsrelay.8
	install -m 644 docs/relay.ini.5 $(DESTDIR)$(PREFIX)/share/man/man5/relay.ini.5
	sed 's|/usr/sbin/tlsrelay|$(PREFIX)/sbin/tlsrelay|g' dist/tlsrelay.service \
		> $(DESTDIR)$(PREFIX)/lib/systemd/system/tlsrelay.service
	chmod 644 $(DESTDIR)$(PREFIX)/lib/systemd/system/tlsrelay.service

clean:
	rm -rf build tlsrelay

# resolver probe (tests)
build/asan/dnsprobe: tests/integration/dnsprobe.c build/asan/libtlsrelay.a
	@mkdir -p $(dir $@)
	$(CC) $(WARN) -O1 -g $(ASAN) $(INCS) $(PKG_CFLAGS) -o $@ $< build/asan/libtlsrelay.a \
		$(PKG_LIBS) -lm

integration: build/asan/dnsprobe

# The smarthost against a loopback "test internet" (signed DNS + one SMTP
# server per kind of destination), with a table of outcomes.  Needs root for
# port 25 on 127.0.0.N.
demo: deps-test
	$(MAKE) tlsrelay certs
	/usr/bin/python3 tests/integration/demo.py --relay ./tlsrelay
.PHONY: demo

# MTA-STS probe (tests/integration/test_mtasts.py)
build/asan/mtasts_probe: tests/integration/mtasts_probe.c build/asan/libtlsrelay.a
	@mkdir -p $(dir $@)
	$(CC) $(WARN) -O1 -g $(ASAN) $(INCS) $(PKG_CFLAGS) -o $@ $< build/asan/libtlsrelay.a \
		$(PKG_LIBS) -lm

integration: build/asan/mtasts_probe

# Benchmark kit (tests/bench/README.md): load generator, SMTP sink, and the
# side-by-side run against a private Postfix instance.  `make bench-smoke` is
# the 10-second CI run.
build/bench/loadgen: tests/bench/loadgen.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) -O2 -g $(PKG_CFLAGS) -o $@ $< $(PKG_LIBS)

build/bench/sink: tests/bench/sink.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) -O2 -g $(PKG_CFLAGS) -o $@ $< $(PKG_LIBS)

bench: tlsrelay build/bench/loadgen build/bench/sink
	tests/bench/run

bench-smoke: tlsrelay build/bench/loadgen build/bench/sink
	tests/bench/run --smoke
.PHONY: bench bench-smoke

# --- Operations (issue 9): valgrind, long fault tests, fuzzing in CI ----------
#
#   make valgrind   the foundation integration suite against a -O0 -g build of
#                   the daemon run under valgrind memcheck: a leak (definite or
#                   indirect) or a memory error makes the relay exit 99, and the
#                   harness requires exit 0 at SIGTERM, so the test fails
#   make test-long  the kill -9 fault tests with 10,000 messages, and the floods
#   make fuzz-ci    every libFuzzer target for 30 s
VG_OBJS  := $(patsubst %.c,build/valgrind/%.o,$(LIB_SRCS))
VG_FLAGS  = --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
            --show-leak-kinds=definite,indirect --num-callers=30 --track-origins=yes
VG_TESTS ?= tests/integration/test_foundation.py

build/valgrind/%.o: %.c $(wildcard relay/*.h policy/*.h certs/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(WARN) -O0 -g $(INCS) $(PKG_CFLAGS) -c -o $@ $<

build/valgrind/libtlsrelay.a: $(VG_OBJS)
	@rm -f $@
	ar rcs $@ $^

build/valgrind/tlsrelay: build/valgrind/relay/main.o build/valgrind/libtlsrelay.a
	$(CC) -O0 -g -o $@ $^ $(PKG_LIBS) -lm

# The harness runs $TLSRELAY_BIN -f -c FILE: this wrapper puts valgrind in front.
build/valgrind/tlsrelay-memcheck: build/valgrind/tlsrelay Makefile
	printf '#!/bin/sh\nexec valgrind -q %s --log-fd=2 %s "$$@"\n' \
		'$(VG_FLAGS)' '$(CURDIR)/build/valgrind/tlsrelay' > $@
	chmod 755 $@

valgrind: deps-test
	@command -v valgrind >/dev/null || { echo "valgrind: not installed" >&2; exit 1; }
	$(MAKE) build/valgrind/tlsrelay-memcheck
	TLSRELAY_BIN=$(CURDIR)/build/valgrind/tlsrelay-memcheck \
		/usr/bin/python3 -m pytest -q $(VG_TESTS)

test-long: deps-test
	$(MAKE) build/asan/tlsrelay
	TLSRELAY_BIN=$(CURDIR)/build/asan/tlsrelay TLSRELAY_FAULT_MESSAGES=10000 \
		/usr/bin/python3 -m pytest -q -s \
		tests/integration/test_faults.py tests/integration/test_floods.py

# Like `make fuzz` with FUZZ_SECONDS=30, but a crash fails the target (the
# fuzzer's exit status is kept; its output is in build/fuzz/NAME.log).
fuzz-ci: deps-test
	$(MAKE) fuzz-build
	@fail=0; for f in $(FUZZERS); do n=$$(basename $$f); mkdir -p build/fuzz/corpus-$$n; \
		echo "== $$n (30s)"; \
		if $$f -max_total_time=30 -print_final_stats=1 build/fuzz/corpus-$$n \
			tests/fuzz/corpus/$$n > build/fuzz/$$n.log 2>&1; then \
			grep -E '^stat::number_of_executed_units|^Done' build/fuzz/$$n.log | tail -1; \
		else echo "$$n: FAILED (build/fuzz/$$n.log)"; tail -40 build/fuzz/$$n.log; fail=1; fi; \
		done; exit $$fail

.PHONY: valgrind test-long fuzz-ci
