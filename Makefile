# flashkit — the README's two commands.
#   make demo   build, then run the main demo (CUDA when a GPU is present, else the CPU)
#   make test   build, then run every test (C drivers through ctest, then the Python tests if present)
# Variables: BUILD (build folder), CMAKE_FLAGS (extra configure flags), JOBS.
BUILD       ?= build
JOBS        ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=

.PHONY: all build demo test clean

all: build

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	$(BUILD)/flashkit demo

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	@if [ -f python/tests/run.sh ]; then sh python/tests/run.sh; fi

clean:
	rm -rf $(BUILD)
