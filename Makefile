# The commands people type. See README.md.
#
#   make deps    install what the tests and benchmarks need (apt; skipped when present)
#   make build   release build of the workspace (binaries in target/release, or
#                under CARGO_TARGET_DIR when that is set)
#   make run     run busybox containers: with berth-runtime alone, then through
#                berth-supervisord and berth-shim (scripts/run-demo.sh)
#   make test    deps, debug build, cargo test of the workspace (docker-py
#                tests included, in the virtualenv deps makes), lint
#   make compat  docker-py 7.2's own integration suite against berthd and
#                against Debian's dockerd, side by side (scripts/compat-docker-py.sh),
#                then critest against berth's CRI and containerd 1.6 (scripts/critest.sh)
#   make lint    cargo fmt --check and clippy with warnings denied
#   make bench   container start-up time (against runc and crun), image pull
#                (against docker pull and ctr pull) with idle memory,
#                containers through the daemons (run latency, shim memory,
#                100 at once; against ctr and docker), and the engine
#                (bench/engine.sh: berthd against Debian's dockerd, both
#                driven by the real docker CLI: `docker run --rm` latency,
#                target <= 0.1x; 100 `docker run -d` at once, <= 0.2x;
#                idle memory of the daemon, supervisors apart, <= 0.15x;
#                and where the time of one run goes: CLI, engine,
#                supervisor, shim, runtime), and networking (bench/network.sh:
#                run latency on the default bridge, the network's own cost,
#                a published port's throughput, latency and memory, each
#                daemon in a network namespace of its own); volumes
#                (bench/volumes.sh: 1 GiB written and read through a named
#                volume and the container's root, against dockerd); and
#                `docker cp` of 200 MB both ways (bench/cp.sh, <= 0.5x
#                dockerd); and image builds (bench/build.sh: a Debian
#                minbase Dockerfile with a 100 MB COPY, cold, unchanged and
#                after a small change, against dockerd's legacy builder and
#                buildah); Compose v2 up -d and down of a three-service app
#                (bench/compose.sh); see docs/benchmarks.md
#   make install binaries under $(PREFIX)/bin (default /usr/local), systemd
#                units (berth.socket, berthd.service, berth-supervisord.service),
#                the berth group (sysusers.d; created now when installing to /),
#                /etc/berth/daemon.json.example; DESTDIR and PREFIX honoured;
#                the binaries come from $(BIN_SRC) (default: make build's)
#   make uninstall  remove what install put (the berth group and
#                /etc/berth/daemon.json stay, as packages leave them)
#   make clean   remove build output

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

# rustup installs cargo here; make may be started with a PATH that lacks it.
ifneq ($(wildcard $(HOME)/.cargo/bin),)
export PATH := $(HOME)/.cargo/bin:$(PATH)
endif

CARGO ?= cargo
APT_PACKAGES := busybox-static umoci skopeo jq iptables runc crun hyperfine strace \
                iproute2 util-linux gcc libc6-dev containerd docker.io \
                qemu-system-x86 linux-image-amd64 cpio \
                docker-registry apache2-utils openssl zstd debootstrap iperf3 curl xz-utils bzip2 \
                docker-compose systemd containernetworking-plugins buildah

.PHONY: deps build run test compat lint bench clean install uninstall

deps:
	@missing=""; \
	for pkg in $(APT_PACKAGES); do \
	    status=$$(dpkg-query -W -f='$${db:Status-Abbrev}' "$$pkg" 2>/dev/null || true); \
	    [ "$$status" = "ii " ] || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "deps: installing$$missing"; \
	    apt-get update; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(APT_PACKAGES); \
	else \
	    echo "deps: all packages installed"; \
	fi
	@command -v $(CARGO) >/dev/null || { \
	    echo "deps: cargo not found; install a Rust toolchain >= 1.85 with rustup" >&2; exit 1; }
	@$(MAKE) --no-print-directory $(DOCKER_SECCOMP) $(VENV_STAMP)

# A Python virtualenv with docker-py 7.2 and pytest, every package pinned in
# the requirements file; made again only when that file changes.
VENV := $(CURDIR)/target/venv
VENV_REQUIREMENTS := integration-tests/python/requirements.txt
VENV_STAMP := $(VENV)/.requirements
$(VENV_STAMP): $(VENV_REQUIREMENTS)
	@command -v python3 >/dev/null || { echo "deps: python3 not found" >&2; exit 1; }
	rm -rf $(VENV)
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --requirement $(VENV_REQUIREMENTS)
	@cp $(VENV_REQUIREMENTS) $@

# moby's default seccomp profile, as data for the runtime's seccomp tests.
# Debian ships it in golang-github-docker-docker-dev; installing that package
# would pull in 260 others, so only its .deb is fetched and only this file kept.
DOCKER_SECCOMP := target/fixtures/docker-default-seccomp.json
SECCOMP_IN_DEB := ./usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json
$(DOCKER_SECCOMP):
	@mkdir -p $(@D)/deb
	@cd $(@D)/deb && { apt-get download golang-github-docker-docker-dev 2>/dev/null || \
	    { apt-get update && apt-get download golang-github-docker-docker-dev; }; }
	dpkg-deb --fsys-tarfile $(@D)/deb/golang-github-docker-docker-dev_*.deb | tar -xO $(SECCOMP_IN_DEB) > $@.tmp
	@mv $@.tmp $@ && rm -rf $(@D)/deb

# The short-lived programs (a runtime command, the shim, berth-ctr; several
# run for each container) are linked statically and not position-independent:
# no dynamic loader and no relocations to apply at exec, half the page faults,
# which is most of their start-up cost on a VM where page faults are dear.
# They are built for the explicit host target (so the flags skip build
# scripts and proc-macros) and copied over the dynamic ones; the daemon stays
# dynamic (it resolves registry hosts through glibc's NSS).
HOST_TARGET = $(shell $(CARGO) -vV 2>/dev/null | sed -n 's/^host: //p')
# Where cargo writes its output, as cargo itself reports it: target/ unless
# CARGO_TARGET_DIR or a cargo config (build.target-dir) says otherwise.
TARGET_DIR = $(shell $(CARGO) metadata --format-version 1 --no-deps 2>/dev/null | \
                 sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
RELEASE = $(TARGET_DIR)/release
STATIC_BINS := berth-runtime berth-shim berth-ctr
STATIC_RUSTFLAGS := -C target-feature=+crt-static -C relocation-model=static

build:
	$(CARGO) build --release --workspace
	RUSTFLAGS="$(STATIC_RUSTFLAGS)" $(CARGO) build --release --target $(HOST_TARGET) \
	    -p berth-runtime -p berth-shim -p berth-supervisor --bin berth-runtime --bin berth-shim --bin berth-ctr
	release="$(RELEASE)"; static="$(TARGET_DIR)/$(HOST_TARGET)/release"; \
	for bin in $(STATIC_BINS); do \
	    cp "$$static/$$bin" "$$release/$$bin.static"; \
	    mv -f "$$release/$$bin.static" "$$release/$$bin"; \
	done

run: deps build
	@BERTH_RUNTIME=$(RELEASE)/berth-runtime BERTH_SUPERVISORD=$(RELEASE)/berth-supervisord \
	    BERTH_CTR=$(RELEASE)/berth-ctr scripts/run-demo.sh

test: deps
	$(CARGO) build --workspace
	BERTH_RUNTIME=$(TARGET_DIR)/debug/berth-runtime BERTH_VENV=$(VENV) \
	    $(CARGO) test --workspace --no-fail-fast
	@$(MAKE) --no-print-directory lint

# Not part of test: it takes several minutes and its result is a comparison
# (recorded in docs/compat.md), not a pass or a fail of its own.
compat: deps
	$(CARGO) build --workspace --bins
	BERTH_BIN_DIR=$(TARGET_DIR)/debug BERTH_VENV=$(VENV) scripts/compat-docker-py.sh
	BERTH_SUPERVISORD=$(TARGET_DIR)/debug/berth-supervisord scripts/critest.sh

# Both checks run so one report shows everything; either failing fails lint.
lint:
	@status=0; \
	echo "$(CARGO) fmt --all --check"; \
	$(CARGO) fmt --all --check || status=1; \
	echo "$(CARGO) clippy --workspace --all-targets -- -D warnings"; \
	$(CARGO) clippy --workspace --all-targets -- -D warnings || status=1; \
	exit $$status

bench: deps build
	BERTH_RUNTIME=$(RELEASE)/berth-runtime bench/runtime.sh
	BERTH_SUPERVISORD=$(RELEASE)/berth-supervisord BERTH_CTR=$(RELEASE)/berth-ctr bench/pull.sh
	BERTH_SUPERVISORD=$(RELEASE)/berth-supervisord BERTH_CTR=$(RELEASE)/berth-ctr bench/tasks.sh
	BERTHD=$(RELEASE)/berthd BERTH=$(RELEASE)/berth BERTH_SUPERVISORD=$(RELEASE)/berth-supervisord \
	    BERTH_CTR=$(RELEASE)/berth-ctr bench/engine.sh
	BERTHD=$(RELEASE)/berthd BERTH_SUPERVISORD=$(RELEASE)/berth-supervisord BERTH_CTR=$(RELEASE)/berth-ctr \
	    bench/network.sh
	BERTHD=$(RELEASE)/berthd BERTH_SUPERVISORD=$(RELEASE)/berth-supervisord \
	    BERTH_CTR=$(RELEASE)/berth-ctr bench/volumes.sh
	BERTHD=$(RELEASE)/berthd BERTH_SUPERVISORD=$(RELEASE)/berth-supervisord \
	    BERTH_CTR=$(RELEASE)/berth-ctr bench/cp.sh
	BERTHD=$(RELEASE)/berthd BERTH_SUPERVISORD=$(RELEASE)/berth-supervisord \
	    BERTH_CTR=$(RELEASE)/berth-ctr COMPOSE=$(VENV)/bin/docker-compose bench/compose.sh
	BERTHD=$(RELEASE)/berthd BERTH_SUPERVISORD=$(RELEASE)/berth-supervisord bench/build.sh
	$(CARGO) build --release -p berth-client --example cri_pod_bench
	BERTH_SUPERVISORD=$(RELEASE)/berth-supervisord CRI_POD_BENCH=$(RELEASE)/examples/cri_pod_bench bench/cri.sh

clean:
	$(CARGO) clean

PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
BIN_SRC ?= $(RELEASE)
INSTALL_BINS := berthd berth berth-supervisord berth-shim berth-runtime berth-ctr
UNITS := berth.socket berthd.service berth-supervisord.service

install:
	@for bin in $(INSTALL_BINS); do \
	    [ -x "$(BIN_SRC)/$$bin" ] || { echo "install: $(BIN_SRC)/$$bin is missing: make build first (or set BIN_SRC)" >&2; exit 1; }; \
	done
	install -d -m 0755 "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(UNITDIR)" "$(DESTDIR)$(SYSUSERSDIR)" \
	    "$(DESTDIR)$(SYSCONFDIR)/berth"
	for bin in $(INSTALL_BINS); do install -m 0755 "$(BIN_SRC)/$$bin" "$(DESTDIR)$(BINDIR)/$$bin"; done
	for unit in $(UNITS); do \
	    src=contrib/systemd/$$unit; [ -f "$$src" ] || src=$$src.in; \
	    sed 's|@BINDIR@|$(BINDIR)|g' "$$src" > "$(DESTDIR)$(UNITDIR)/$$unit"; \
	    chmod 0644 "$(DESTDIR)$(UNITDIR)/$$unit"; \
	done
	install -m 0644 contrib/systemd/berth.sysusers "$(DESTDIR)$(SYSUSERSDIR)/berth.conf"
	install -m 0644 contrib/daemon.json.example "$(DESTDIR)$(SYSCONFDIR)/berth/daemon.json.example"
	@if [ -z "$(DESTDIR)" ]; then \
	    getent group berth >/dev/null || groupadd --system berth; \
	    if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; \
	fi

uninstall:
	for bin in $(INSTALL_BINS); do rm -f "$(DESTDIR)$(BINDIR)/$$bin"; done
	for unit in $(UNITS); do rm -f "$(DESTDIR)$(UNITDIR)/$$unit"; done
	rm -f "$(DESTDIR)$(SYSUSERSDIR)/berth.conf" "$(DESTDIR)$(SYSCONFDIR)/berth/daemon.json.example"
	-rmdir "$(DESTDIR)$(SYSCONFDIR)/berth" 2>/dev/null
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
