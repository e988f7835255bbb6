# One command each: `make demo`, `make test`. Everything installs into .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: docs bench-motion bench-infer vtest bytecode install demo test lint typecheck unit bench bench-live bench-join bench-ops bench-multihost clean promtool kafka bench-eos chromium vendor-uplot ffmpeg rtsp iptables

$(STAMP): pyproject.toml stream/_deflate.c
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# An editable install leaves the sources uncompiled, and with
# PYTHONDONTWRITEBYTECODE set every process would compile them again at start
# (~60 ms of each worker's start-up): write the bytecode once, as a wheel would.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q stream producers consumers >/dev/null

install: $(STAMP) bytecode

# Debian's package "prometheus": promtool checks the /metrics exposition and
# compose/prometheus/prometheus.yml; the server answers the dashboard's queries
# in tests/integration/test_dashboard.py.
promtool:
	@{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) \
	  || echo "warning: could not install promtool"; }

# Debian's package "ffmpeg": serves a generated clip as a live HTTP MPEG-TS stream
# (killed and restarted mid-capture) in tests/integration/test_live_capture.py and
# test_stream_reader.py.
ffmpeg:
	@command -v ffmpeg >/dev/null 2>&1 || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null) \
	  || echo "warning: could not install ffmpeg"; }

# Debian's package "iptables": tests/netsim.py's Host.cut() drops a simulated host's
# packets inside its network namespace (a network partition) in
# tests/integration/test_partition.py.
iptables:
	@command -v iptables >/dev/null 2>&1 || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iptables >/dev/null) \
	  || echo "warning: could not install iptables"; }

# A real video of people walking (OpenCV's sample vtest.avi, from Debian's package
# opencv-doc, not installed: only the file is taken) for the stateful-pipeline tests
# in tests/integration/test_motion_state.py.
VTEST := $(HOME)/.cache/imgstream/vtest.avi
vtest: $(VTEST)
$(VTEST):
	@mkdir -p $(dir $(VTEST)) && tmp=$$(mktemp -d) && cd $$tmp && { \
	  apt-get download -qq opencv-doc >/dev/null 2>&1 \
	  || (apt-get update -qq && apt-get download -qq opencv-doc >/dev/null); } \
	  && dpkg-deb --fsys-tarfile opencv-doc_*.deb \
	  | tar -xO ./usr/share/doc/opencv-doc/examples/data/vtest.avi > $(VTEST).part \
	  && mv $(VTEST).part $(VTEST); rm -rf $$tmp; \
	  test -s $(VTEST) || echo "warning: could not fetch vtest.avi"

# GStreamer's RTSP server with its GObject bindings, for Debian's python3 (not the
# venv's): tests/fixtures/rtsp_server.py serves an H.264 test stream with a login
# in tests/integration/test_rtsp_capture.py.
RTSP_PACKAGES := python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \
  gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly
rtsp:
	@/usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import Gst; Gst.init(None); assert Gst.ElementFactory.find('x264enc')" >/dev/null 2>&1 || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(RTSP_PACKAGES) >/dev/null) \
	  || echo "warning: could not install GStreamer's RTSP server"; }

# Debian's package "chromium" (and a font): the headless browser that
# tests/e2e/test_dashboard_browser.py drives through Playwright (executable_path);
# Playwright's own browser downloads are never used.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null) \
	  || echo "warning: could not install chromium"; }

# The dashboard's chart library, vendored in stream/dashboard/static (committed;
# this only refreshes it from the npm registry).
UPLOT_VERSION := 1.6.32
vendor-uplot:
	rm -rf .vendor && mkdir -p .vendor
	cd .vendor && npm pack --silent uplot@$(UPLOT_VERSION) >/dev/null && tar xzf uplot-$(UPLOT_VERSION).tgz
	cp .vendor/package/dist/uPlot.iife.min.js .vendor/package/dist/uPlot.min.css stream/dashboard/static/
	cp .vendor/package/LICENSE stream/dashboard/static/uPlot.LICENSE
	rm -rf .vendor

demo: $(STAMP) bytecode
	rm -rf out
	$(BIN)/imgstream run tests/data/photos --out out --ops gray
	@echo "outputs are under ./out (records in out/results.jsonl)"

# Apache Kafka (KRaft) in the foreground: the bootstrap address is the first
# line of output; Ctrl-C stops it. NODES=3 for a three-node cluster, PORT=9092
# for a fixed client port (one node). Jars come from Maven Central once
# (~/.cache/imgstream); needs Java 17+ and Maven.
NODES ?= 1
kafka:
	@exec $(PY) compose/kafka/kraft.py --nodes $(NODES) $(if $(PORT),--port $(PORT))

lint: $(STAMP)
	$(BIN)/ruff check stream producers consumers tests benchmarks
	$(BIN)/ruff format --check stream producers consumers tests benchmarks

# mypy sees the package as it is installed (imgstream, imgstream.producers,
# imgstream.consumers) through a tree of links; it cannot follow the editable
# install's import hook.
TYPECHECK := .typecheck/imgstream
typecheck: $(STAMP)
	rm -rf .typecheck && mkdir -p $(TYPECHECK)
	for f in stream/*; do ln -s "$(CURDIR)/$$f" $(TYPECHECK)/; done
	ln -s "$(CURDIR)/producers" $(TYPECHECK)/producers
	ln -s "$(CURDIR)/consumers" $(TYPECHECK)/consumers
	$(BIN)/mypy $(TYPECHECK)

# Two pytest processes (pytest-xdist), one test file each at a time: module and
# session fixtures (each process starts its own brokers) stay within a file.
test: $(STAMP) bytecode promtool ffmpeg rtsp chromium iptables vtest lint typecheck docs
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=30 tests

# The documentation site (mkdocs.yml, docs/) into site/, --strict: a broken link or
# a reference marker the code cannot fill fails the build. The reference pages are
# generated from the code by docs/hooks.py. `$(BIN)/mkdocs serve` serves it live.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	@printf '*\n' > site/.gitignore
	@echo "docs: open site/index.html"

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

# The Quix Streams peer and py-spy come from the optional `bench` extra.
bench: $(STAMP) bytecode
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/bench_gray.py

bench-live: $(STAMP) bytecode
	$(BIN)/python benchmarks/bench_live.py

# A fresh `work` joining a busy group: time to its first result (BOOTSTRAP= for Kafka).
bench-join: $(STAMP) bytecode
	$(BIN)/python benchmarks/bench_join.py $(if $(BOOTSTRAP),--bootstrap $(BOOTSTRAP))

# Debian's package "opencv-doc": the held-back scene-text photos of bench_infer.py.
bench-infer: $(STAMP) bytecode
	@test -d /usr/share/doc/opencv-doc/examples/text || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends opencv-doc >/dev/null) \
	  || echo "warning: could not install opencv-doc"; }
	$(BIN)/python benchmarks/bench_infer.py

# 8 sources of a real video through --ops motion: throughput, latency, snapshots, restore.
bench-motion: $(STAMP) bytecode vtest
	$(BIN)/python benchmarks/bench_motion.py $(if $(BOOTSTRAP),--bootstrap $(BOOTSTRAP))

bench-ops: $(STAMP) bytecode
	$(BIN)/python benchmarks/bench_ops.py

# Root only: network namespaces and CPU cgroups (tests/netsim.py); Java + Maven for Kafka.
bench-multihost: $(STAMP) bytecode
	$(BIN)/python benchmarks/bench_multihost.py

bench-eos: $(STAMP) bytecode
	$(BIN)/python benchmarks/bench_eos.py

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache .typecheck
