#!/usr/bin/env bash
# The whole test suite: setup, formatting, lints, then every test of every crate.
# Tests that need root and network namespaces run when root; in CI (CI=true) they fail loudly
# instead of skipping if the lab cannot be built.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/services.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# No crate's modules import each other in a cycle.
python3 scripts/module-cycles.py --self-test
python3 scripts/module-cycles.py crates
# Nothing dropped silently: every `let _ =` in library code says why nothing is lost.
scripts/silent-drops.sh --self-test
scripts/silent-drops.sh
cargo test --workspace --locked -- --test-threads "${VOLLEY_TEST_THREADS:-4}"
