#!/usr/bin/env bash
# Nothing dropped silently: lists every `let _ =` in the non-test code of the given crate
# directories (default: every crate under crates/ but volley-bench and volley-testkit) and exits
# 1 when there is any. A discarded result must be counted or logged instead; the few discards
# that lose nothing keep a comment starting `// dropped:` (on the line itself or the line just
# before) that says why.
#
# Non-test code: the crate's `.rs` files outside `tests/`, `benches/` and `target/`, less the
# items marked `#[cfg(test)]` (a test module's body, a test-only function or field), less the
# files of modules declared `#[cfg(test)] mod name;` (and their submodules).
#
#   scripts/silent-drops.sh [CRATE_DIR...]
#   scripts/silent-drops.sh --self-test
set -euo pipefail
cd "$(dirname "$0")/.."

# The awk program. Pass 1 prints the files (`dir/name.rs`) and folders (`dir/name/`) of the
# modules declared `#[cfg(test)] mod name;`; pass 2 reads that list from `modlist` and prints
# `file:line: text` for every unexcused `let _ =` outside test code.
# shellcheck disable=SC2016
PROGRAM='
# The line with string and character literals and the line comment taken out, for brace
# counting and matching. Good enough to find where an item ends; a string spanning lines can
# fool it, which at worst skips the rest of the file.
function code(s) {
    gsub(/\\\\/, "", s)
    gsub(/\\"/, "", s)
    gsub(/"[^"]*"/, "\"\"", s)
    gsub(/'"'"'[{}]'"'"'/, "", s)
    sub(/\/\/.*/, "", s)
    return s
}
function count(s, c,    t) {
    t = s
    return gsub(c, "", t)
}
BEGIN {
    if (pass == 2) {
        while ((getline m < modlist) > 0) {
            if (m ~ /\/$/) testdir[m] = 1
            else if (m != "") testfile[m] = 1
        }
    }
}
FNR == 1 {
    state = 0
    pending = 0
    before = ""
    dir = FILENAME
    if (dir ~ /(^|\/)(lib|main|mod)\.rs$/) sub(/\/?[^\/]*$/, "", dir)
    else sub(/\.rs$/, "", dir)
    skip = (FILENAME in testfile)
    for (p in testdir) if (index(FILENAME, p) == 1) skip = 1
}
pass == 1 {
    line = $0
    if (line ~ /^[ \t]*#\[cfg\(test\)\]/) {
        pending = 1
        sub(/^[ \t]*#\[cfg\(test\)\][ \t]*/, "", line)
    }
    if (pending && line ~ /^[ \t]*(pub(\([a-z]+\))? )?mod [A-Za-z_0-9]+[ \t]*;/) {
        name = line
        sub(/^[ \t]*(pub(\([a-z]+\))? )?mod /, "", name)
        sub(/[ \t]*;.*/, "", name)
        print dir "/" name ".rs"
        print dir "/" name "/"
    }
    # Attributes, comments and blank lines keep the attribute pending; anything else ends it.
    if (line !~ /^[ \t]*(#!?\[.*|\/\/.*)?$/) pending = 0
    next
}
skip { next }
state == 0 && /^[ \t]*#\[cfg\(test\)\]/ {
    state = 1
    line = $0
    sub(/^[ \t]*#\[cfg\(test\)\][ \t]*/, "", line)
    before = $0
    if (line ~ /^[ \t]*$/) next
    $0 = line
}
state == 1 {
    # The item the attribute applies to starts here, unless this is another attribute, a
    # comment or a blank line.
    before = $0
    if ($0 ~ /^[ \t]*(#!?\[.*|\/\/.*)?$/) next
    c = code($0)
    depth = count(c, "{") - count(c, "}")
    if (depth <= 0 && (count(c, "{") > 0 || c ~ /[;,][ \t]*$/)) state = 0
    else state = 2
    next
}
state == 2 {
    c = code($0)
    depth += count(c, "{") - count(c, "}")
    if (depth <= 0) state = 0
    before = $0
    next
}
{
    if (code($0) ~ /(^|[^A-Za-z0-9_])let _ =/ && $0 !~ /\/\/ dropped:/ && before !~ /\/\/ dropped:/)
        print FILENAME ":" FNR ": " $0
    before = $0
}
'

# Lists the unexcused discards in the crate directories given; 1 when there is any.
check() {
    local dir
    for dir in "$@"; do
        if [ ! -d "$dir" ]; then
            echo "silent-drops: no such crate directory: $dir" >&2
            return 2
        fi
    done
    local -a files
    mapfile -t files < <(find "$@" -name '*.rs' -not -path '*/tests/*' \
        -not -path '*/benches/*' -not -path '*/target/*' | sort)
    [ "${#files[@]}" -gt 0 ] || return 0
    local modlist found
    modlist=$(mktemp)
    awk -v pass=1 "$PROGRAM" "${files[@]}" >"$modlist"
    found=$(awk -v pass=2 -v modlist="$modlist" "$PROGRAM" "${files[@]}")
    rm -f "$modlist"
    if [ -n "$found" ]; then
        printf '%s\n' "$found"
        echo "$(printf '%s\n' "$found" | wc -l) silent drop(s): count or log what is dropped," \
            "or say after \`// dropped:\` why nothing is lost" >&2
        return 1
    fi
}

# Checks the check on a crate made up for it: what it must find and what it must not.
self_test() {
    local tmp out want
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    mkdir -p "$tmp/c/src/sim" "$tmp/c/tests" "$tmp/c/benches"
    cat >"$tmp/c/src/lib.rs" <<'EOF'
mod sim;
#[cfg(test)]
mod helpers;
pub fn a(tx: std::sync::mpsc::Sender<u8>) {
    let _ = tx.send(1); // FOUND plain
    // dropped: the receiver is gone only at shutdown
    let _ = tx.send(2);
    let _ = tx.send(3); // dropped: same line
    // let _ = tx.send(4); a comment, not code
    let _unused = 5;
    let s = "{ let _ = not code";
}
pub struct S {
    #[cfg(test)]
    probe: u8,
    kept: u8,
}
impl S {
    #[cfg(test)]
    fn only_in_tests(&self) {
        let _ = self.kept;
        let b = '}';
    }
    fn after(&self) {
        let _ = self.kept; // FOUND after a test-only fn
    }
}
#[cfg(test)]
mod tests {
    fn t() {
        let _ = 1;
    }
}
EOF
    cat >"$tmp/c/src/sim.rs" <<'EOF'
pub fn b() {
    let _ = std::fs::remove_file("x"); // FOUND in a module file
}
#[cfg(test)]
mod tests;
EOF
    printf 'fn t() {\n    let _ = 1;\n}\n' >"$tmp/c/src/sim/tests.rs"
    printf 'fn h() {\n    let _ = 1;\n}\n' >"$tmp/c/src/helpers.rs"
    printf 'fn t() {\n    let _ = 1;\n}\n' >"$tmp/c/tests/it.rs"
    printf 'fn t() {\n    let _ = 1;\n}\n' >"$tmp/c/benches/b.rs"
    out=$(check "$tmp/c" 2>/dev/null | sed "s|^$tmp/||") && {
        echo "self-test: the check passed a crate with silent drops" >&2
        return 1
    }
    want=$(printf '%s\n' \
        "c/src/lib.rs:5:     let _ = tx.send(1); // FOUND plain" \
        "c/src/lib.rs:25:         let _ = self.kept; // FOUND after a test-only fn" \
        "c/src/sim.rs:2:     let _ = std::fs::remove_file(\"x\"); // FOUND in a module file")
    if [ "$out" != "$want" ]; then
        printf 'self-test: found\n%s\nwanted\n%s\n' "$out" "$want" >&2
        return 1
    fi
    # Excused everywhere: passes.
    sed -i 's|// FOUND|// dropped:|' "$tmp/c/src/lib.rs" "$tmp/c/src/sim.rs"
    if ! check "$tmp/c" >/dev/null 2>&1; then
        echo "self-test: the check failed a crate whose discards are all excused" >&2
        return 1
    fi
    echo "self-test: ok"
}

if [ "${1:-}" = "--self-test" ]; then
    self_test
    exit
fi
if [ "$#" -eq 0 ]; then
    mapfile -t crates < <(find crates -mindepth 1 -maxdepth 1 -type d \
        -not -name volley-bench -not -name volley-testkit | sort)
    set -- "${crates[@]}"
fi
check "$@"
