# The two commands people expect:
#   make          build (release, in build/)
#   make check    install dependencies, build with ASan+UBSan, run unit, lab and fuzz tests
# and a few more: make lab-full, make install, make deb, make demo-wg, make bench,
# make bench-control, make bench-mtu, make bench-relay, make bench-relay-path, make bench-filter,
# make bench-filter-cost, make bench-policy, make bench-policy-scale, make bench-filter-policy,
# make bench-nat, make bench-flow, make bench-mcert-renew, make bench-csum, make fuzz,
# make clean.

BUILD ?= build
CHECK_BUILD ?= build-check
FUZZ_BUILD ?= build-fuzz
WARN_BUILD ?= build-warn
FUZZ_SECONDS ?= 15
PREFIX ?= /usr/local

.PHONY: all install deb deps check warn-check unit lab lab-full fuzz fuzz-check bench bench-control bench-mtu \
	bench-relay bench-relay-path bench-filter bench-filter-cost bench-filter-policy bench-policy \
	bench-policy-mapper bench-policy-scale bench-nat bench-flow bench-mcert-renew bench-csum demo demo-wg clean

all:
	@[ -f $(BUILD)/build.ninja ] || meson setup $(BUILD) --buildtype=release -Dtests=false
	ninja -C $(BUILD)

# The programs, man pages, bash completion and systemd units under PREFIX (DESTDIR for
# staging).
install:
	@[ -f $(BUILD)/build.ninja ] || meson setup $(BUILD) --buildtype=release -Dtests=false
	meson configure $(BUILD) -Dprefix=$(PREFIX)
	ninja -C $(BUILD)
	DESTDIR="$(DESTDIR)" meson install -C $(BUILD) --no-rebuild

# A Debian package in build-deb/ (scripts/build-deb.sh).
deb:
	scripts/build-deb.sh build-deb

deps:
	scripts/install-deps.sh

$(CHECK_BUILD)/build.ninja:
	CC=gcc meson setup $(CHECK_BUILD) -Db_sanitize=address,undefined -Db_lundef=false

check: deps $(CHECK_BUILD)/build.ninja warn-check
	ninja -C $(CHECK_BUILD)
	meson test -C $(CHECK_BUILD) --print-errorlogs --num-processes 2
	$(MAKE) fuzz-check

unit: $(CHECK_BUILD)/build.ninja
	ninja -C $(CHECK_BUILD)
	meson test -C $(CHECK_BUILD) --suite unit --print-errorlogs

lab: $(CHECK_BUILD)/build.ninja
	ninja -C $(CHECK_BUILD)
	meson test -C $(CHECK_BUILD) --suite lab --print-errorlogs

# The lab with every pair of NAT kinds (docs/testing.md); make check runs a few of them.
lab-full: $(CHECK_BUILD)/build.ninja
	ninja -C $(CHECK_BUILD)
	meson test -C $(CHECK_BUILD) --setup full --suite lab --suite lab-full --print-errorlogs \
		--num-processes 2

$(FUZZ_BUILD)/build.ninja:
	CC=clang meson setup $(FUZZ_BUILD) -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false

# Every fuzz target for FUZZ_SECONDS from the seed corpus in tests/fuzz/corpus.
# The release build with every warning an error: -O3 finds "may be used uninitialized"
# and format cases that the -O0 sanitizer build cannot.
warn-check:
	@[ -f $(WARN_BUILD)/build.ninja ] || meson setup $(WARN_BUILD) --buildtype=release --werror
	ninja -C $(WARN_BUILD)

fuzz-check: $(FUZZ_BUILD)/build.ninja
	ninja -C $(FUZZ_BUILD) fuzzers
	tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

# make fuzz: every target for 10 minutes (FUZZ_SECONDS=N on the command line for less).
fuzz: FUZZ_SECONDS = 600
fuzz: fuzz-check

bench: all
	bench/throughput.sh

bench-control: all
	bench/control_scale.sh

# 10,000 simulated nodes under a 1,000-rule policy: policy changes and joins to every stream.
bench-policy-scale: all
	BENCH_POLICY_RULES=1000 BENCH_NODES=10000 bench/control_scale.sh

# Parse and compile a policy for a large tailnet (CPU time; needs no build).
bench-policy:
	bench/policy.sh

# A policy change in the mapper at 1,000 and 10,000 nodes, main and this tree in turns.
bench-policy-mapper:
	bench/mapper_policy.sh

# Single-stream TCP at MTU 1420 and 9000, trellisd and wireguard-go taking turns.
bench-mtu: all
	bench/mtu.sh

bench-relay: all
	bench/relay.sh

# Single-stream TCP between two nodes, relayed and direct taking turns.
bench-relay-path: all
	bench/relay_path.sh

# The Internet checksum's cost per 1,400 bytes, before and after issue 14 (bench/csum_cost.c),
# with the release build's optimization.
bench-csum:
	@mkdir -p bench/out
	$(CC) -O3 -std=gnu11 -D_GNU_SOURCE -fno-strict-aliasing -Isrc -o bench/out/csum_cost \
		bench/csum_cost.c src/offload/vnet.c
	bench/out/csum_cost

# Single-stream TCP into a node with no policy and with a 1,000-rule packet filter, taking turns.
bench-filter: all
	bench/filter.sh

# The filter's own cost per packet, this tree against FILTER_COST_BASE (a revision) in one run.
bench-filter-cost:
	bench/filter_cost.sh

# Single-stream TCP into a node under an allow-all policy and a realistic 50-rule one, in turns.
bench-filter-policy: all
	bench/filter_policy.sh

bench-flow: all
	bench/flow.sh

# The machine-certificate auto-renewal tick at 1,000 and 10,000 certificates, before and now.
bench-mcert-renew: all
	bench/mcert_renew.sh

# NAT traversal: time to direct per pair of NAT kinds, failover and back, hard NAT on both
# sides (birthday probing), idle wakeups against wireguard-go (network namespaces, root).
bench-nat: all
	bench/nat_paths.sh
	bench/nat.sh
	bench/idle_wakeups.sh

# A coordination server and three nodes in network namespaces.
demo: all
	scripts/demo.sh

# Two plain WireGuard interfaces (trellisd --wg) in network namespaces.
demo-wg: all
	scripts/demo-wg.sh

clean:
	rm -rf $(BUILD) $(CHECK_BUILD) $(FUZZ_BUILD) $(WARN_BUILD) build-deb
