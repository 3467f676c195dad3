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
			2>&1 | tail -3 || exit 1; done

install: tlsrelay
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/share/doc/tlsrelay
	install -m 755 tlsrelay $(DESTDIR)$(PREFIX)/sbin/tlsrelay
	install -m 644 relay.ini.example README.md $(DESTDIR)$(PREFIX)/share/doc/tlsrelay/

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
