#!/usr/bin/env bash
# Installs the Debian 12 packages qtlab needs to build, test and run. Idempotent: when every package
# is already installed it prints nothing and touches nothing; otherwise it runs apt-get update once
# and installs only what is missing. Needs root (or sudo) for the install step.
# Usage: install_deps.sh [--with-torch]
set -euo pipefail

packages=(
  cmake make g++ pkg-config git   # toolchain
  libopenblas-openmp-dev          # float GEMM backend (OpenMP build: shares our thread pool)
  libfmt-dev                      # formatting and printing
  doctest-dev                     # the test framework
  libcli11-dev                    # command-line parsing for build/qtlab
  nlohmann-json3-dev              # JSON output (benchmarks, metrics) and config files
  clang-format                    # make format
  libopenmpi-dev openmpi-bin      # distributed data-parallel training (mpirun)
  curl ca-certificates            # tools/fetch_data.sh downloads the pinned datasets
  gnuplot-nox                     # qtlab report: plots as PNG/SVG
)
# `--with-torch` (make bench, make fixtures, make test): Debian's PyTorch, for the fixture
# generator, the PyTorch speed baseline and tests/test_torch_model.cpp (tools/torch_model.py). Never
# needed to build or run qtlab itself. apt-get update + install takes about 2 minutes.
[[ "${1:-}" == "--with-torch" ]] && packages+=(python3-torch python3-numpy)

missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$package")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "install_deps: installing ${#missing[@]} Debian packages (a minute or two the first time): ${missing[*]}"
sudo_cmd=()
[[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
start=$SECONDS
echo "install_deps: apt-get update"
"${sudo_cmd[@]}" apt-get update -qq
echo "install_deps: apt-get install (its output goes to ${TMPDIR:-/tmp}/qtlab-install-deps.log)"
log="${TMPDIR:-/tmp}/qtlab-install-deps.log"
if ! "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" > "$log" 2>&1; then
  tail -n 20 "$log" >&2
  echo "install_deps: apt-get install failed (whole log: $log)" >&2
  exit 1
fi
echo "install_deps: installed ${#missing[@]} packages in $((SECONDS - start)) s"
