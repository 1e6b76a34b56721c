#!/usr/bin/env bash
# JVM tests of android_demo/core: compile core + tests (javac --release 11), build the LiteRT JNI
# shim against the venv's libLiteRt.so, run JUnit 5, and close with the line "N passed, N failed"
# (skipped tests are counted on the line before it).
#
# Usage: android_demo/run_tests.sh [EXPORT_FOLDER]
#   EXPORT_FOLDER (or env FACEKD_EXPORT): an export run folder with tflite-*/ and golden/.
#   Without one, the unit tests run and the golden tests are reported as skipped.
# Env: FACEKD_PYTHON (default <repo>/.venv/bin/python) locates ai_edge_litert;
#      JUNIT_CONSOLE_JAR overrides the JUnit console launcher (default: Debian's junit5 package),
#      GSON_JAR the Gson jar (default: Debian's libgoogle-gson-java).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
EXPORT="${1:-${FACEKD_EXPORT:-}}"
PYTHON="${FACEKD_PYTHON:-$REPO/.venv/bin/python}"
BUILD="$HERE/build"
JUNIT_JAR="${JUNIT_CONSOLE_JAR:-/usr/share/java/junit-platform-console-standalone.jar}"
GSON_JAR="${GSON_JAR:-/usr/share/java/gson.jar}" # Debian libgoogle-gson-java 2.10 (the app: Gradle, gson 2.10)
LITERT_VERSION="2.3.0" # the C API the JNI shim declares (it changed at 2.2)

die() {
    echo "run_tests.sh: $*" >&2
    exit 1
}

if [ -n "$EXPORT" ]; then
    [ -d "$EXPORT" ] || die "export folder '$EXPORT' does not exist"
    EXPORT="$(cd "$EXPORT" && pwd)"
fi

# --- tools -----------------------------------------------------------------------------------
command -v javac >/dev/null 2>&1 || die "javac not found: install a JDK 11 or newer (e.g. apt-get install -y openjdk-17-jdk-headless)"
if [ -z "${JAVA_HOME:-}" ]; then
    JAVA_HOME="$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")"
fi
JAVA="$JAVA_HOME/bin/java"
[ -x "$JAVA" ] || JAVA="$(command -v java)"

if [ ! -f "$JUNIT_JAR" ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "run_tests.sh: installing Debian package junit5 (JUnit console launcher)" >&2
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq junit5 >/dev/null \
            || die "apt-get install -y junit5 failed"
    fi
    [ -f "$JUNIT_JAR" ] || die "JUnit console launcher not found at $JUNIT_JAR: run 'sudo apt-get install -y junit5' or set JUNIT_CONSOLE_JAR"
fi

if [ ! -f "$GSON_JAR" ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "run_tests.sh: installing Debian package libgoogle-gson-java (Gson, the core's JSON reader)" >&2
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libgoogle-gson-java >/dev/null \
            || die "apt-get install -y libgoogle-gson-java failed"
    fi
    [ -f "$GSON_JAR" ] || die "Gson not found at $GSON_JAR: run 'sudo apt-get install -y libgoogle-gson-java' or set GSON_JAR"
fi

# --- compile ---------------------------------------------------------------------------------
rm -rf "$BUILD/classes"
mkdir -p "$BUILD/classes/main" "$BUILD/classes/test" "$BUILD/native"
mapfile -t MAIN_SOURCES < <(find "$HERE/core/src/main/java" -name '*.java' | sort)
mapfile -t TEST_SOURCES < <(find "$HERE/core/src/test/java" -name '*.java' | sort)
javac --release 11 -encoding UTF-8 -Xlint:all -cp "$GSON_JAR" -d "$BUILD/classes/main" "${MAIN_SOURCES[@]}"
javac --release 11 -encoding UTF-8 -Xlint:all,-processing -d "$BUILD/classes/test" \
    -cp "$BUILD/classes/main:$GSON_JAR:$JUNIT_JAR" "${TEST_SOURCES[@]}"

# --- LiteRT JNI shim -------------------------------------------------------------------------
# Needed for the golden embedding tests: a failure is fatal when an export folder was given.
NATIVE_LIB="$BUILD/native/libfacekd_litert_jni.so"
rm -f "$NATIVE_LIB"
shim_problem=""
if [ ! -x "$PYTHON" ]; then
    shim_problem="no Python at $PYTHON (set FACEKD_PYTHON)"
elif ! LITERT_DIR="$("$PYTHON" -c 'import ai_edge_litert, os; print(os.path.dirname(ai_edge_litert.__file__))' 2>/dev/null)"; then
    shim_problem="$PYTHON cannot import ai_edge_litert (install the project's tflite extra)"
else
    found_version="$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("ai-edge-litert"))')"
    if [ "$found_version" != "$LITERT_VERSION" ]; then
        shim_problem="the JNI shim declares LiteRT $LITERT_VERSION's C API but ai-edge-litert $found_version is installed: pin ai-edge-litert==$LITERT_VERSION"
    elif [ ! -f "$JAVA_HOME/include/jni.h" ]; then
        shim_problem="no jni.h under $JAVA_HOME/include: install a full JDK or set JAVA_HOME"
    elif ! command -v gcc >/dev/null 2>&1; then
        shim_problem="gcc not found (apt-get install -y gcc)"
    elif ! gcc -std=c11 -O2 -Wall -Wextra -Werror -shared -fPIC \
        -I"$JAVA_HOME/include" -I"$JAVA_HOME/include/linux" \
        "$HERE/core/src/test/c/litert_host_jni.c" -o "$NATIVE_LIB" \
        "$LITERT_DIR/libLiteRt.so" -Wl,-rpath,"$LITERT_DIR"; then
        shim_problem="gcc failed to build the LiteRT JNI shim"
    fi
fi
if [ -n "$shim_problem" ]; then
    [ -z "$EXPORT" ] || die "$shim_problem"
    echo "run_tests.sh: LiteRT JNI shim not built ($shim_problem); golden tests need an export folder anyway" >&2
fi

# --- run -------------------------------------------------------------------------------------
JAVA_PROPS=()
[ -f "$NATIVE_LIB" ] && JAVA_PROPS+=("-Dfacekd.litert.jni=$NATIVE_LIB")
[ -n "$EXPORT" ] && JAVA_PROPS+=("-Dfacekd.export=$EXPORT")
[ -n "$EXPORT" ] || echo "run_tests.sh: no export folder given: golden tests will be skipped" >&2

set +e
"$JAVA" "${JAVA_PROPS[@]}" -jar "$JUNIT_JAR" --disable-banner --disable-ansi-colors --details=tree \
    --reports-dir "$BUILD/test-reports" \
    --class-path "$BUILD/classes/main:$BUILD/classes/test:$GSON_JAR" \
    --scan-class-path "$BUILD/classes/test" 2>&1 | tee "$BUILD/junit.log"
junit_status=${PIPESTATUS[0]}
set -e

count() { # count "<label>" -> number on JUnit's summary line "[  N <label>  ]", 0 if absent
    awk -v label="$1" 'index($0, label) && $1 == "[" { print $2; found = 1; exit } END { if (!found) print 0 }' "$BUILD/junit.log"
}
passed=$(count "tests successful")
failed=$(($(count "tests failed") + $(count "containers failed")))
skipped=$(($(count "tests skipped") + $(count "tests aborted")))
echo "$skipped skipped (JUnit skipped or aborted: golden tests without an export folder or artifact)"
echo "$passed passed, $failed failed"
if [ "$junit_status" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$passed" -eq 0 ]; then
    exit 1
fi
