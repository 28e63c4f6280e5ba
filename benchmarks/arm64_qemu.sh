#!/bin/sh
# The kernel's tests on aarch64 (arm64 Linux), emulated by qemu-user on an x86-64 Debian 12 host.
#
#   sudo benchmarks/arm64_qemu.sh setup      # once: qemu-user, a Debian arm64 python3.11, aarch64 wheels
#   benchmarks/arm64_qemu.sh run -m pytest -q -p no:cacheprovider tests/kernel/test_kernel.py
#   benchmarks/arm64_qemu.sh run -c "from conv1x1_cli.kernel.target import simd_unit; print(simd_unit())"
#
# `run` runs the arm64 python3.11 from the repository's root, the checkout's conv1x1_cli on its path.
# There is no binfmt_misc in the sandboxes this was made in, so every arm64 binary is started through
# qemu-aarch64 explicitly; qemu's -0 sets the guest's sys.executable to a host wrapper that comes back
# here, so that subprocesses of sys.executable (the tests start many) work too.  numba JIT-compiles
# aarch64 code and qemu runs it: about 5x slower than the host (13 tests of test_kernel.py: 268 s
# with an empty numba cache, 20 s with it filled).
#
# Environment: ARM64_ROOT (default ~/.cache/conv1x1-arm64: sysroot/, site/, debs/), PIP (the host's
# pip that installs the aarch64 wheels, default `python3 -m pip`), NUMBA_CACHE_DIR (default
# $ARM64_ROOT/numba-cache).
set -eu
ROOT=${ARM64_ROOT:-$HOME/.cache/conv1x1-arm64}
REPO=$(cd "$(dirname "$0")/.." && pwd)
SYSROOT=$ROOT/sysroot
# The arm64 Debian packages python3.11 needs (apt-cache depends --recurse python3.11:arm64).
DEBS="gcc-12-base libacl1 libbz2-1.0 libc6 libcom-err2 libcrypt1 libdb5.3 libexpat1 libffi8 libgcc-s1 libgomp1
  libgssapi-krb5-2 libk5crypto3 libkeyutils1 libkrb5-3 libkrb5support0 liblzma5 libmd0 libncursesw6 libnsl2
  libpcre2-8-0 libpython3.11-minimal libpython3.11-stdlib libreadline8 libselinux1 libsqlite3-0 libssl3
  libstdc++6 libtinfo6 libtirpc3 libuuid1 libzstd1 python3.11-minimal python3.11 zlib1g"

setup() {
  mkdir -p "$ROOT/debs" "$SYSROOT"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq qemu-user
  dpkg --print-foreign-architectures | grep -qx arm64 || { dpkg --add-architecture arm64; apt-get update -qq; }
  cd "$ROOT/debs"
  # shellcheck disable=SC2046
  apt-get download $(for deb in $DEBS; do printf '%s:arm64 ' "$deb"; done) media-types
  for deb in *.deb; do dpkg -x "$deb" "$SYSROOT"; done
  # aarch64 wheels of what the tests need, at the host's versions, installed from the host.
  versions=$(python3 -c 'import importlib.metadata as m
names = "numpy numba llvmlite click rich pytest hypothesis threadpoolctl".split()
print(" ".join(f"{n}=={m.version(n)}" for n in names))')
  # shellcheck disable=SC2086
  ${PIP:-python3 -m pip} install --no-cache-dir --upgrade --target "$ROOT/site" --only-binary=:all: \
    --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux_2_28_aarch64 \
    --python-version 3.11 --implementation cp --abi cp311 $versions
}

# The arm64 python, in the current directory (the guest's sys.executable re-enters here).
guest() {
  case ":${PYTHONPATH:-}:" in
    *":$ROOT/site:"*) ;;
    *) export PYTHONPATH="$ROOT/site:$REPO${PYTHONPATH:+:$PYTHONPATH}" ;;
  esac
  export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-$ROOT/numba-cache}
  export PYTHONDONTWRITEBYTECODE=1
  exec qemu-aarch64 -L "$SYSROOT" -0 "$SYSROOT/usr/bin/python3.11-arm64" "$SYSROOT/usr/bin/python3.11" "$@"
}

run() {
  wrapper=$SYSROOT/usr/bin/python3.11-arm64
  printf '#!/bin/sh\nexec %s guest "$@"\n' "$REPO/benchmarks/arm64_qemu.sh" > "$wrapper"
  chmod +x "$wrapper"
  cd "$REPO"
  guest "$@"
}

command=${1:-}
[ $# -gt 0 ] && shift
case $command in
  setup) setup ;;
  run) run "$@" ;;
  guest) guest "$@" ;;
  *) echo "usage: $0 setup | run PYTHON-ARGUMENTS..." >&2; exit 2 ;;
esac
