#!/usr/bin/env bash
# Regression gate: the quick benchmark (3 images x the public attack set,
# real tools) must show no false accusation and no identification rate below
# the floors in bench/gate-floor.tsv. The floors are the rates measured when
# the gate was set (see the file): a drop means the mark got weaker.
# CT_GATE_ARGS adds bench/run options, e.g. CT_GATE_ARGS="--strength 0.35"
# to see the gate fail on a deliberately weakened mark.
set -euo pipefail
out="$CT_TMP/bench-gate.$$"
rm -rf "$out"
rc=0
read -r -a extra <<< "${CT_GATE_ARGS:-}"
CELTRACE="$CELTRACE" "$CT_SRC/bench/run" --quick --out "$out" --jobs 2 "${extra[@]}" \
    > "$out.log" 2>&1 || rc=$?
cat "$out.log"
if [ "$rc" -eq 3 ]; then
  echo "bench gate: FALSE ACCUSATION"
  echo "0 passed, 1 failed"
  exit 1
fi
if [ "$rc" -ne 0 ]; then
  echo "bench gate: the benchmark failed (exit $rc)"
  echo "0 passed, 1 failed"
  exit 1
fi
pass=0
fail=0
# rate per attack over all content types: correct / marked trials
while IFS=$'\t' read -r attack floor; do
  case "$attack" in ''|\#*) continue ;; esac
  rate=$(awk -F, -v a="$attack" 'NR>1 && $4==a && $3!="unmarked" {n++; c+=$7} END {if (n) printf "%.4f", c/n; else print "none"}' "$out/robustness.csv")
  if [ "$rate" = none ]; then
    echo "bench gate: no trials for $attack"; fail=$((fail+1)); continue
  fi
  if awk -v r="$rate" -v f="$floor" 'BEGIN {exit !(r + 1e-9 >= f)}'; then
    pass=$((pass+1))
  else
    echo "bench gate: $attack identified $rate < floor $floor"; fail=$((fail+1))
  fi
done < "$CT_SRC/bench/gate-floor.tsv"
# Over all marked trials together: the measure that sees a mark weakened
# everywhere by a little (each attack alone has too few trials to).
overall_floor=$(awk -F'\t' '$1=="overall" {print $2}' "$CT_SRC/bench/gate-overall.tsv")
overall=$(awk -F, 'NR>1 && $3!="unmarked" {n++; c+=$7} END {printf "%.4f", c/n}' "$out/robustness.csv")
if awk -v r="$overall" -v f="$overall_floor" 'BEGIN {exit !(r + 1e-9 >= f)}'; then
  pass=$((pass+1))
else
  echo "bench gate: overall identification $overall < floor $overall_floor"; fail=$((fail+1))
fi
rm -rf "$out" "$out.log"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
