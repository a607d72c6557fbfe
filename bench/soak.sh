#!/usr/bin/env bash
# The long run of issue 16 (item 7): PODS static pods churned for SECS seconds (edited, removed
# and added back, crash-looping, probed, some on a pod network) with a release build; prints the
# agent's resident memory, open fds, threads, live tasks and CPU time every 10 s (the curve),
# then checks that every pod converges, that the agent did not grow, and that nothing is left
# once every manifest is removed. CI runs the same test for 3 minutes with 100 pods
# (crates/staticlet/tests/soak.rs). As root, with the test packages (scripts/deps.sh test).
#
#   bench/soak.sh [SECS (1800)] [PODS (200)] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
export STATICLET_SOAK_SECS=${1:-1800} STATICLET_SOAK_PODS=${2:-200}
[ $# -ge 3 ] && export STATICLET_SOAK_SEED=$3
exec cargo test --release -p staticlet --test soak -- --nocapture
