#!/bin/bash
# Wait up to $1 seconds for bench/device/session.sh to finish, then bring back everything it has made so
# far as one archive ($OUT/run.tgz: progress, logs, failures, results). Call it again within 30 s of the
# last call, or the machine is given back.
for i in $(seq $(( $1 / 5 ))); do [ -f /tmp/run/done ] && break; sleep 5; done
cat /tmp/run/progress 2>/dev/null
[ -f /tmp/run/failures.log.outcomes ] && echo "tests so far: $(cut -d' ' -f1 /tmp/run/failures.log.outcomes | sort | uniq -c | xargs)"
grep -h "^====" /tmp/run/failures.log 2>/dev/null | sort | uniq
mkdir -p $OUT && tar czf $OUT/run.tgz -C /tmp run 2>/dev/null
true
