#!/bin/bash
# Loop started by up.sh: every 3 s, each Released PV of the harness (label vmta.dev/harness=local-pv)
# gets its directory emptied and its claimRef removed, so it binds again (the harness's stand-in
# for a provisioner's reclaimPolicy Delete).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/env.sh"
while sleep 3; do
  kubectl get pv -l vmta.dev/harness=local-pv -o jsonpath='{range .items[?(@.status.phase=="Released")]}{.metadata.name} {.spec.hostPath.path}{"\n"}{end}' 2>/dev/null |
    while read -r name path; do
      [ -n "$name" ] && [[ "$path" == "$W/pv/"* ]] || continue
      find "$path" -mindepth 1 -delete
      kubectl patch pv "$name" --type=json -p '[{"op":"remove","path":"/spec/claimRef"}]' >/dev/null && echo "recycled $name"
    done
done
