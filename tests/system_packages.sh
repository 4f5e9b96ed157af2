#!/usr/bin/env bash
# Debian packages the test suite drives for real: PostgreSQL's server (the backend
# tests start a throwaway cluster on loopback), Chromium (the browser test, driven
# by Playwright; no browser download) and libfaketime (the fleet key tests run the
# fleet server with its clock moved months ahead); valgrind, whose CPU (AVX2, no
# VNNI) runs int8 files as devices without VNNI do (tests/cpus.py); and wrk and hey,
# the load generators of bench/serving_throughput.py; espeak-ng, which speaks the
# keyword-spotting clips (components/data/speech.py); nginx-light, the fleet's
# production shape in front of its replicas (edge_fleet/production/). Installed
# with apt-get when missing, nothing when present. Called by `make test` and
# `make bench-serving`;
# with arguments (`make run DATA=kws`: espeak-ng), only those packages.
set -euo pipefail

need=()
if [ $# -gt 0 ]; then
  for package in "$@"; do
    command -v "$package" >/dev/null || need+=("$package")
  done
else
  if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    need+=(postgresql)
  fi
  command -v chromium >/dev/null || need+=(chromium)
  ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || need+=(faketime)
  command -v hey >/dev/null || need+=(hey)
  command -v wrk >/dev/null || need+=(wrk)
  command -v valgrind >/dev/null || need+=(valgrind)
  command -v espeak-ng >/dev/null || need+=(espeak-ng)
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
fi
[ ${#need[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
  else
    echo "tests/system_packages.sh: the tests need Debian's ${need[*]}; run as root" \
      "or install them: apt-get install ${need[*]}" >&2
    exit 1
  fi
fi
echo "installing Debian packages for the tests: ${need[*]}"
# The tests make their own cluster: the package's default one is not wanted.
$sudo mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" |
  $sudo tee /etc/postgresql-common/createcluster.d/edgeloop-no-main.conf >/dev/null
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
  --no-install-recommends "${need[@]}" >/dev/null
