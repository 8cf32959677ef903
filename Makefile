# Everyday commands. CMake does the building; this file only names the common tasks.
#   make deps      install the Debian packages qtlab needs (idempotent, quiet when all present)
#   make           build build/libqtlab.a, build/qtlab, build/qtlab_tests (Release)
#   make test      deps (+ PyTorch, for tests/test_torch_model.cpp) + build + run the test suite
#   make demo      deps + data + build/qtlab + the main job (three BERTs, W8A8, Table 2, report)
#   make bench     deps + build/qtlab + run the benchmarks
#   make sanitize  build with ASan+UBSan in build-sanitize/ and run the test suite there
#   make data      fetch the pinned datasets into data/downloads (tools/fetch_data.sh)
#   make fixtures  regenerate the PyTorch golden fixtures in tests/data
#   make table2    run (or resume) the Table 2 reproduction plan, experiments/table2.json (hours)
#   make results   regenerate docs/results/table2.md and its plots from the committed results
#   make format    clang-format every C++ file in place

BUILD_DIR    ?= build
SANITIZE_DIR ?= build-sanitize
JOBS         ?= $(shell nproc)
CMAKE_FLAGS  ?=
# CI: make test CMAKE_FLAGS=-DQTLAB_WERROR=ON (warnings are errors)
SOURCES       = $(shell git ls-files --cached --others --exclude-standard '*.cpp' '*.h' 2>/dev/null)

.PHONY: all build cli deps test bench demo sanitize format clean data fixtures table2 results

all: build

deps:
	@tools/install_deps.sh

$(BUILD_DIR)/CMakeCache.txt:
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) > /dev/null

# --no-print-directory: no "gmake[N]: Entering directory" lines from CMake's recursive makes.
build: $(BUILD_DIR)/CMakeCache.txt
	@cmake --build $(BUILD_DIR) -j $(JOBS) -- --no-print-directory

# Only build/qtlab (not the test binary): what the demo and the benchmarks need.
cli: $(BUILD_DIR)/CMakeCache.txt
	@cmake --build $(BUILD_DIR) -j $(JOBS) --target qtlab_cli -- --no-print-directory

test: deps build
	@tools/install_deps.sh --with-torch
	@tools/run_tests.sh $(BUILD_DIR)/qtlab_tests

bench: deps cli
	@tools/install_deps.sh --with-torch
	@tools/run_benchmarks.sh $(BUILD_DIR)

sanitize: deps
	@cmake -S . -B $(SANITIZE_DIR) -DCMAKE_BUILD_TYPE=Debug -DQTLAB_SANITIZE=ON > /dev/null
	@cmake --build $(SANITIZE_DIR) -j $(JOBS) -- --no-print-directory
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 LSAN_OPTIONS=suppressions=$(CURDIR)/tools/lsan.supp \
	  OMPI_MCA_mca_base_component_disable_dlclose=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  tools/run_tests.sh $(SANITIZE_DIR)/qtlab_tests

data:
	@tools/fetch_data.sh

# The main job: bert-mini trained three ways (vanilla, clipped softmax, gated attention),
# quantized to W8A8, Table 2 columns printed, report written (tools/demo.sh; its header lists
# the knobs, e.g. `make demo DEMO_STEPS=2000`).
DEMO_DIR   ?= runs/demo
DEMO_STEPS ?= 600
demo: deps data cli
	@QTLAB=$(BUILD_DIR)/qtlab DEMO_DIR=$(DEMO_DIR) DEMO_STEPS=$(DEMO_STEPS) tools/demo.sh

# The paper's Table 2 at CPU scale (issue 17): every run of experiments/table2.json, resumable;
# results are published to docs/results/table2/ after every evaluation step.
PARALLEL ?= 2
table2: deps data cli
	@$(BUILD_DIR)/qtlab experiment experiments/table2.json --parallel $(PARALLEL)

# The tables and growth curves of docs/results/table2.md, from the committed results files alone.
results: cli
	@$(BUILD_DIR)/qtlab results docs/results/table2 --out docs/results/table2.md \
	  --plots docs/results/table2/plots

fixtures:
	@tools/install_deps.sh --with-torch
	@for script in tools/make_*fixtures.py; do echo "$$script"; /usr/bin/python3 $$script tests/data || exit 1; done

format:
	@clang-format -i $(SOURCES)

clean:
	@rm -rf $(BUILD_DIR) $(SANITIZE_DIR)
