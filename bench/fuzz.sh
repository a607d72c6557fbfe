#!/bin/sh
# Long fuzz runs (issue 16 item 3): every bolero target with many more inputs than CI's
# ~1.4e5 in total. With cargo-bolero installed (cargo install cargo-bolero; needs a nightly
# toolchain for libFuzzer) each target runs under libFuzzer for FUZZ_SECONDS; otherwise the
# targets run as tests with STATICLET_FUZZ_ITERATIONS random inputs each (default 1.5e6, so
# 10^7+ in total), in the release profile.
#
#   bench/fuzz.sh                 # all targets
#   FUZZ_SECONDS=600 bench/fuzz.sh
#   STATICLET_FUZZ_ITERATIONS=5000000 bench/fuzz.sh
set -eu
cd "$(dirname "$0")/.."
# package  test-harness  target (test name)
TARGETS="
staticlet-manifest --test=fuzz manifest_decode_and_validate
staticlet-agent --test=fuzz url_source_body
staticlet-agent --test=fuzz local_api_requests
staticlet-kubelet-server --lib logs::fuzz::cri_log_reader
staticlet-kubelet-server --lib logs::fuzz::log_query
staticlet-cni --test=fuzz cni_result
staticlet-cni --test=fuzz cni_config
staticlet-images --lib fuzz_tests::image_documents
staticlet-images --lib fuzz_tests::layer_unpacking
"
if command -v cargo-bolero >/dev/null 2>&1 && [ -z "${STATICLET_FUZZ_ITERATIONS:-}" ]; then
    secs=${FUZZ_SECONDS:-300}
    echo "$TARGETS" | while read -r pkg harness target; do
        [ -n "$pkg" ] || continue
        echo "== $pkg $target (libFuzzer, ${secs}s)"
        cargo bolero test -p "$pkg" "$target" -T "${secs}s" || exit 1
    done
else
    export STATICLET_FUZZ_ITERATIONS=${STATICLET_FUZZ_ITERATIONS:-1500000}
    echo "$TARGETS" | while read -r pkg harness target; do
        [ -n "$pkg" ] || continue
        echo "== $pkg $target ($STATICLET_FUZZ_ITERATIONS inputs)"
        cargo test --release -p "$pkg" "$harness" "$target" -- --exact --nocapture 2>&1 \
            | grep -E '^fuzz target|panicked|BOLERO|test result' || exit 1
    done
fi
