#!/usr/bin/env bash
# Mutation check of the power-cut test (test/relay/power-cut.test.ts): it must fail when the spool
# stops syncing. Each mutation is applied to a copy of the working tree (the checkout itself is never
# touched), and the short power-cut test runs there:
#   baseline             no change                                        expected: passes
#   segment-no-odsync    segments opened without O_DSYNC (spool.ts)       expected: fails
#   journal-no-fdatasync the journal append's fdatasync removed           expected: fails
#   directory-no-fsync   DirectorySync's fsync removed (group-commit.ts)  expected: passes, as LazyFS
#                        does not model directory fsync: what the test cannot see
# Usage: scripts/power-cut-mutations.sh [mutation...]   (POWER_CUT_CYCLES, default 4)
# Exit status 0 when every mutation did what was expected.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NODE="$ROOT/node_modules/.bin/node"
export LAZYFS_ARCHIVE=${LAZYFS_ARCHIVE:-$ROOT/../shared/lazyfs/lazyfs-bin.tar.xz}
CYCLES=${POWER_CUT_CYCLES:-4}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vmta-power-cut-mutations-XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# name % file % perl substitution (applied with -0: the whole file) % expected outcome
MUTATIONS=(
  "baseline%%%pass"
  "segment-no-odsync%mta/spool/spool.ts%s/O_RDWR \| O_CREAT \| O_EXCL \| O_DSYNC,/O_RDWR | O_CREAT | O_EXCL,/%fail"
  "journal-no-fdatasync%mta/spool/group-commit.ts%s/(await writeAll\(handle, group\.map\(\(pending\) => pending\.record\)\);)\n\s*await handle\.datasync\(\);/\$1/%fail"
  "directory-no-fsync%mta/spool/group-commit.ts%s/await handle\.sync\(\);\n(\s*this\.#onFsync\(\);)/\$1/%pass"
)

selected=("$@")
failures=0
summary=()
for entry in "${MUTATIONS[@]}"; do
  IFS='%' read -r name file substitution expected <<<"$entry"
  if ((${#selected[@]} > 0)) && [[ ! " ${selected[*]} " == *" $name "* ]]; then continue; fi
  copy="$WORK/$name"
  mkdir -p "$copy"
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -) | tar -xf - -C "$copy"
  ln -s "$ROOT/node_modules" "$copy/node_modules"
  if [[ -n "$file" ]]; then
    perl -0pi -e "$substitution" "$copy/$file"
    if cmp -s "$ROOT/$file" "$copy/$file"; then
      echo "mutation $name did not apply to $file (the code changed?): fix this script" >&2
      exit 2
    fi
    echo "== $name: $(diff -u "$ROOT/$file" "$copy/$file" | grep -E '^[-+][^-+]' | tr -s ' ' | paste -sd ' ' -)"
  else
    echo "== $name: the tree as it is"
  fi
  log="$WORK/$name.log"
  set +e
  (cd "$copy" && CI=true POWER_CUT_CYCLES="$CYCLES" timeout 900 "$NODE" --test --test-timeout=900000 test/relay/power-cut.test.ts) >"$log" 2>&1
  status=$?
  set -e
  outcome=$([[ $status -eq 0 ]] && echo pass || echo fail)
  figures=$(grep -E '^(ℹ|#) (cycles|attempted|lost) ' "$log" | sed -E 's/^(ℹ|#) /   /' || true)
  reason=$(grep -m1 -E "AssertionError|Error:" "$log" | sed 's/^ *//' || true)
  echo "$figures"
  [[ $outcome == fail ]] && echo "   failed with: ${reason:-exit status $status}"
  if [[ $outcome == "$expected" ]]; then
    verdict="as expected"
  else
    verdict="NOT AS EXPECTED (expected $expected; log below)"
    failures=$((failures + 1))
    tail -40 "$log"
  fi
  echo "   -> $outcome, $verdict"
  summary+=("$(printf '%-22s %-5s %s' "$name" "$outcome" "$verdict")")
done
echo
echo "power-cut mutation check ($CYCLES cycles each):"
printf '  %s\n' "${summary[@]}"
exit $((failures > 0))
