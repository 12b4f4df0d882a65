#!/bin/bash
cd /work/main
for c in 0 1; do taskset -c $c chrt -i 0 python3 -c 'while True: pass' & done
bench/run.sh --quick --no-build --skip-keys --skip-scaleout --out /tmp/spin --label spin2 > /tmp/spin/spin2.log 2>&1
kill $(jobs -p)
bench/run.sh --quick --no-build --skip-keys --skip-scaleout --out /tmp/spin --label nospin2 > /tmp/spin/nospin2.log 2>&1
echo finished > /tmp/spin/done2
