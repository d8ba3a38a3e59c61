# Thin wrapper over CMake so that the README commands stay short.
BUILD ?= build
JOBS  ?= $(shell nproc)

.PHONY: all deps build test test-asan demo selfcheck bench clean

all: build

deps:
	bash scripts/install-deps.sh

build:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

test: deps build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-asan:
	$(MAKE) test BUILD=build-asan CMAKE_ARGS="-DMOEC_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug $(CMAKE_ARGS_EXTRA)"

demo:
	bash scripts/main_job.sh

selfcheck:
	bash scripts/inference_selfcheck.sh

clean:
	rm -rf build build-asan
