#!/bin/sh
# make test — installs what the tests need (as root), builds every flavour, runs every suite,
# and prints one closing line summing them all: "N passed, N failed".
#   SUITES="unit-x86_64 appliance-x86_64" make test    runs only those suites.
set -u
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
vendor/deps.sh test || exit 1

build() { make -s -j"$JOBS" "$@" || { echo "build failed: make $*"; exit 1; }; }
build build/x86_64/sluice build/x86_64/unit build/x86_64/tlsprobe
build ARCH=aarch64 build/aarch64/sluice build/aarch64/unit build/aarch64/tlsprobe
build SAN=1 build/san/sluice build/san/unit

# name and command of every suite, in the order they run
ALL="unit-x86_64 unit-san unit-aarch64 mock-selftest integration-x86_64 integration-san e2e-sdk appliance-x86_64 appliance-aarch64"
suite_cmd() {
  case $1 in
    unit-x86_64)       echo build/x86_64/unit ;;
    unit-san)          echo build/san/unit ;;
    unit-aarch64)      echo qemu-aarch64-static build/aarch64/unit ;;
    mock-selftest)     echo node test/mock/selftest.js ;;
    integration-x86_64) echo python3 test/integration/run.py --bin build/x86_64/sluice ;;
    integration-san)   echo python3 test/integration/run.py --bin build/san/sluice ;;
    e2e-sdk)           echo node test/e2e/run.mjs --bin build/x86_64/sluice ;;
    appliance-x86_64)  echo test/system/appliance.sh x86_64 ;;
    appliance-aarch64) echo test/system/appliance.sh aarch64 ;;
  esac
}

pass=0 fail=0 broken=
mkdir -p build/test-logs
for s in ${SUITES:-$ALL}; do
  echo "=== $s"
  log=build/test-logs/$s.log
  $(suite_cmd "$s") >"$log" 2>&1
  rc=$?
  cat "$log"
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
  if [ -z "$line" ]; then
    echo "suite $s ended (exit $rc) without its closing count"
    fail=$((fail + 1)); broken="$broken $s"; continue
  fi
  p=${line%% passed*}; f=${line#*passed, }; f=${f%% failed*}
  pass=$((pass + p)); fail=$((fail + f))
  [ "$rc" != 0 ] && [ "$f" = 0 ] && { fail=$((fail + 1)); broken="$broken $s"; }
  [ "$f" != 0 ] && broken="$broken $s"
done
echo "=== suites with failures:${broken:- none}"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
