#!/bin/bash
# Wait up to $1 seconds for bench/device/session.sh to finish; copy what it has made into $OUT (at most 8
# files come back from a call). Call it again within 30 s of the last call, or the machine is given back.
for i in $(seq $(( $1 / 5 ))); do [ -f /tmp/run/done ] && break; sleep 5; done
cat /tmp/run/progress
mkdir -p $OUT; cp /tmp/run/progress /tmp/run/failures.log $OUT/ 2>/dev/null
for f in /tmp/run/*.log; do echo "== $f"; tail -40 $f; done > $OUT/logs.txt 2>/dev/null
cd bench/results 2>/dev/null && cp precision_paths_fp16_b1.json instances.json kernels.json snip_fp16_quick.json $OUT/ 2>/dev/null
true
