# Convenience front end to CMake. The two commands of the README:
#   make demo   install packages, build, start the daemon on sample data
#   make test   install packages, build, run every test
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps build test test-asan test-tsan demo bench config format clean

all: build

deps:
	@.ci/install-deps

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -LE bench -j $(JOBS)

test-asan: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSGBD_ASAN=ON
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -LE bench -j $(JOBS)

test-tsan: deps
	cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSGBD_TSAN=ON
	cmake --build build-tsan -j $(JOBS)
	cd build-tsan && ctest --output-on-failure -L concurrency -j $(JOBS)

demo: build
	$(BUILD)/sgbd demo

bench: build
	cd $(BUILD) && ctest --output-on-failure -L bench

config: build
	$(BUILD)/sgbd config > configs/sgbd.conf

# Formats the lines changed since HEAD (new files once added with `git add
# -N`), not whole files: much of the tree is aligned by hand where
# clang-format would reflow it, and a full pass would bury every diff.
format:
	git clang-format --force --extensions c,h HEAD

clean:
	rm -rf $(BUILD) build-asan build-tsan
