# sluice — build, test, run.
#   make                 build/x86_64/sluice (static, musl)
#   make ARCH=aarch64    build/aarch64/sluice (cross-built, static, musl)
#   make test            every test suite (see test/run.sh)
#   make run             build and start the gateway on its embedded default config
#   make deps            install the Debian packages the build and tests need (as root)
#   make bench           benchmarks (prints figures; asserts nothing)
# Flavours: SAN=1 builds with glibc + ASan/UBSan into build/san (tests only, never shipped).

ARCH ?= x86_64
SAN ?=

ifeq ($(SAN),1)
  FLAVOR := san
  CC := gcc
  VENDOR_ARCH := host
  OPT := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all -DSLUICE_DEBUG
  LDSTATIC :=
  STRIP := true
else
  FLAVOR := $(ARCH)
  VENDOR_ARCH := $(ARCH)
  ifeq ($(ARCH),x86_64)
    CC := musl-gcc
    STRIP := strip
  else ifeq ($(ARCH),aarch64)
    CC := aarch64-linux-musl-gcc
    STRIP := aarch64-linux-gnu-strip
  else
    $(error ARCH must be x86_64 or aarch64)
  endif
  OPT := -Os -ffunction-sections -fdata-sections -fno-asynchronous-unwind-tables
  LDSTATIC := -static -Wl,--gc-sections
endif

B := build/$(FLAVOR)
V := $(B)/vendor
# The vendor stamp is named after its inputs' hash (build.sh keys its own stamps the same way),
# so that a patch removed, which make cannot see as a newer prerequisite, rebuilds them too.
VSTAMP := $(V)/.built-$(shell cat vendor/build.sh vendor/sources.lock vendor/patches/*.patch 2>/dev/null | sha256sum | cut -c1-16)
VERSION := $(shell cat VERSION)

WARN := -std=c11 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wpointer-arith -Wformat=2 -Wno-unused-parameter
# The same inih flags vendor/build.sh compiled ini.c with (they change ini.h's handler type).
INIH := -DINI_HANDLER_LINENO=1 -DINI_STOP_ON_FIRST_ERROR=0 -DINI_ALLOW_INLINE_COMMENTS=1 \
        -DINI_USE_STACK=1 -DINI_MAX_LINE=4096
CFLAGS := $(WARN) $(OPT) -D_GNU_SOURCE -DSLUICE_VERSION='"$(VERSION)"' -DSLUICE_ARCH='"$(ARCH)"' \
          -DCURL_STATICLIB -DJSMN_STRICT -DJSMN_PARENT_LINKS $(INIH) -Isrc -I$(B)/gen -isystem $(V)/include
LIBS := -L$(V)/lib -lcurl -lbearssl -lllhttp -linih -lpthread
LDFLAGS := $(LDSTATIC) $(OPT)

SRCS := $(wildcard src/*.c src/adapters/*.c)
OBJS := $(patsubst src/%.c,$(B)/obj/%.o,$(SRCS)) $(B)/obj/cacert.o
LIB_OBJS := $(filter-out $(B)/obj/main.o,$(OBJS))
UNIT_SRCS := $(wildcard test/unit/*.c)
UNIT_OBJS := $(patsubst test/unit/%.c,$(B)/obj/test/%.o,$(UNIT_SRCS))

.PHONY: all vendor fetch deps test unit run bench clean distclean
all: $(B)/sluice

fetch:
	@vendor/fetch.sh

# Vendor libraries are built once per flavour; the stamp files make a second make a no-op.
$(VSTAMP): vendor/sources.lock vendor/build.sh $(wildcard vendor/patches/*.patch)
	@vendor/deps.sh build $(ARCH)
	@vendor/fetch.sh
	@vendor/build.sh $(VENDOR_ARCH) $(V)
	@touch $@
vendor: $(VSTAMP)

# Dependency versions for --version come from the lock file: one source of truth.
$(B)/gen/deps.h: vendor/sources.lock
	@mkdir -p $(@D)
	@awk '!/^#/ && NF == 5 && !seen[$$1]++ { n = $$1; gsub(/[^a-z0-9]/, "_", n); \
	  printf "#define DEB_%s \"%s\"\n", n, $$2 }' $< > $@

$(B)/obj/%.o: src/%.c $(VSTAMP) $(B)/gen/deps.h $(wildcard src/*.h src/adapters/*.h)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c $< -o $@

# The CA bundle is embedded as bytes (.incbin): a scratch image needs no files for TLS.
$(B)/obj/cacert.o: src/cacert.S $(VSTAMP)
	@mkdir -p $(@D)
	$(CC) -c -DCACERT_PEM='"$(V)/cacert.pem"' $< -o $@

$(B)/sluice: $(OBJS)
	$(CC) $(LDFLAGS) $(OBJS) $(LIBS) -o $@
	$(STRIP) $@

$(B)/obj/test/%.o: test/unit/%.c $(VSTAMP) $(B)/gen/deps.h $(wildcard src/*.h src/adapters/*.h test/unit/*.h)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Itest/unit -c $< -o $@

$(B)/unit: $(UNIT_OBJS) $(LIB_OBJS)
	$(CC) $(LDFLAGS) $^ $(LIBS) -o $@

# A small TLS client linked exactly like sluice, for the empty-root TLS test.
$(B)/tlsprobe: $(B)/obj/test/tlsprobe.o $(LIB_OBJS)
	$(CC) $(LDFLAGS) $^ $(LIBS) -o $@
	$(STRIP) $@
$(B)/obj/test/tlsprobe.o: test/system/tlsprobe.c $(VSTAMP) $(wildcard src/*.h)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c $< -o $@

# The cost of translation per stream event (make bench), linked like the unit tests; not stripped
# (callgrind_annotate names the functions).
$(B)/xlbench: $(B)/obj/test/xlbench.o $(LIB_OBJS)
	$(CC) $(LDFLAGS) $^ $(LIBS) -o $@
$(B)/obj/test/xlbench.o: test/bench/xlbench.c $(VSTAMP) $(B)/gen/deps.h $(wildcard src/*.h src/adapters/*.h)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c $< -o $@

# libcurl alone, for the floor of issue 4's latency target (make bench): linked like xlbench.
$(B)/curlfloor: $(B)/obj/test/curlfloor.o $(LIB_OBJS)
	$(CC) $(LDFLAGS) $^ $(LIBS) -o $@
$(B)/obj/test/curlfloor.o: test/bench/curlfloor.c $(VSTAMP) $(wildcard src/*.h)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c $< -o $@

unit: $(B)/unit
	$(RUNNER) $(B)/unit

test:
	@test/run.sh

run: $(B)/sluice
	$(B)/sluice

bench: $(B)/sluice $(B)/xlbench $(B)/curlfloor
	@test/bench/run.sh

deps:
	@vendor/deps.sh test

clean:
	rm -rf build

distclean: clean
	rm -rf vendor/dl vendor/src vendor/.apt test/e2e/node_modules
