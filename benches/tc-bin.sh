# Sourced by the benchmark scripts: `tc_bin` prints the binary to measure. TC=PATH when set;
# else the static musl release build, the binary users get (built here if need be, as .ci/run
# builds it). Paths are the repository's, wherever it is checked out.
tc_bin() {
    if [ -n "${TC:-}" ]; then
        echo "$TC"
        return
    fi
    local repo musl=x86_64-unknown-linux-musl
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    if ! rustup target list --installed 2>/dev/null | grep -qx "$musl"; then
        echo "the $musl target is not installed: rustup target add $musl (and apt-get install" \
            "musl-tools), or give TC=PATH" >&2
        return 1
    fi
    echo "building the static release (cargo build --release --target $musl)" >&2
    (cd "$repo" && CC_x86_64_unknown_linux_musl=musl-gcc \
        cargo build --release --locked --quiet --target "$musl" >&2) || return 1
    echo "${CARGO_TARGET_DIR:-$repo/target}/$musl/release/tc"
}
