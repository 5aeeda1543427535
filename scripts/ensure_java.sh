#!/usr/bin/env bash
# Make sure a Java runtime that Spark 4 can use (17 or newer) is on this machine.
#
#   scripts/ensure_java.sh          # exit 0 if java >= 17 is there, else try to install one
#
# Java is looked for where pyspark looks: $JAVA_HOME/bin/java if JAVA_HOME is set, else `java` on
# PATH. If it is missing or too old and apt-get can be run (as root, or through passwordless
# sudo), installs openjdk-17-jre-headless, or default-jre-headless where this Debian/Ubuntu has no
# openjdk-17 package (it is Java 21 on Debian 13). Otherwise exits 1 saying what to install.
set -euo pipefail

readonly MIN_JAVA=17

log() { printf 'ensure_java: %s\n' "$*" >&2; }

java_bin() {
    if [[ -n "${JAVA_HOME:-}" ]]; then
        printf '%s\n' "$JAVA_HOME/bin/java"
    else
        command -v java || true
    fi
}

# Major version of the java at $1 (8 for "1.8.0_392", 17 for "17.0.15"), or nothing.
java_major() {
    local java=$1 spec
    [[ -n "$java" && -x "$java" ]] || return 0
    spec=$("$java" -XshowSettings:properties -version 2>&1 |
        awk -F' = ' '/^ *java\.specification\.version = / {print $2; exit}') || true
    case "$spec" in
        1.*) printf '%s\n' "${spec#1.}" ;;
        *) printf '%s\n' "${spec%%.*}" ;;
    esac
}

java_ok() {
    local java major
    java=$(java_bin)
    major=$(java_major "$java")
    if [[ -z "$major" ]]; then
        FOUND="no java${JAVA_HOME:+ at JAVA_HOME=$JAVA_HOME}"
        return 1
    fi
    FOUND="java $major at $java"
    [[ "$major" =~ ^[0-9]+$ ]] && ((major >= MIN_JAVA))
}

how_to_install() {
    cat >&2 <<EOF
ensure_java: Spark 4 needs Java $MIN_JAVA or newer; found $FOUND.
ensure_java: install a Java $MIN_JAVA+ runtime, then run this again:
    Debian/Ubuntu:  sudo apt-get install -y openjdk-17-jre-headless
                    (or default-jre-headless where that package does not exist, e.g. Debian 13)
    Fedora/RHEL:    sudo dnf install -y java-17-openjdk-headless
    macOS:          brew install openjdk@17
  or point JAVA_HOME at an existing JDK/JRE $MIN_JAVA+ (pyspark uses \$JAVA_HOME/bin/java).
EOF
}

# A Debian package name is installable if apt-cache knows a candidate version for it.
apt_has() {
    local candidate
    candidate=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}')
    [[ -n "$candidate" && "$candidate" != "(none)" ]]
}

if java_ok; then
    log "ok: $FOUND"
    exit 0
fi
log "$FOUND; Java $MIN_JAVA+ is required"

if [[ -n "${JAVA_HOME:-}" ]]; then
    # Installing a package would not change what JAVA_HOME points at.
    log "JAVA_HOME=$JAVA_HOME is set, so pyspark will use it; not installing anything"
    how_to_install
    exit 1
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        log "not root and no passwordless sudo: cannot install Java here"
        how_to_install
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null 2>&1 || ! command -v apt-cache >/dev/null 2>&1; then
    log "apt-get is not available: cannot install Java here"
    how_to_install
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
log "running: ${SUDO[*]:+${SUDO[*]} }apt-get update"
"${SUDO[@]}" apt-get update -q >&2
pkg=""
for candidate in openjdk-17-jre-headless default-jre-headless; do
    if apt_has "$candidate"; then
        pkg=$candidate
        break
    fi
done
if [[ -z "$pkg" ]]; then
    log "neither openjdk-17-jre-headless nor default-jre-headless is available from apt here"
    how_to_install
    exit 1
fi
log "running: ${SUDO[*]:+${SUDO[*]} }apt-get install -y --no-install-recommends $pkg"
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "$pkg" >&2

hash -r
if java_ok; then
    log "ok: installed $pkg: $FOUND"
    exit 0
fi
log "installed $pkg, but still $FOUND"
how_to_install
exit 1
