#!/usr/bin/env bash
# After deploying globaldns: check it answers a known .global name, NXDOMAIN for an unknown
# one in the same zone, and forwards other names.
#
#   deploy/smoke.sh NAME EXPECTED_ADDRESS [FORWARDED_NAME]
#   deploy/smoke.sh httpbin.bar.global 240.0.0.2
#
# The server is $GLOBALDNS_SERVER (default: the ClusterIP of istio-system/globaldns, from
# kubectl), port $GLOBALDNS_PORT (default 53). Run it where that address is reachable: a node,
# or a debug pod (kubectl debug node/NODE -it --image=<an image with dig and kubectl>).
set -uo pipefail

if [ $# -lt 2 ]; then
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
name=$1 want=$2 forwarded=${3:-kubernetes.default.svc.cluster.local}
server=${GLOBALDNS_SERVER:-$(kubectl -n istio-system get service globaldns -o jsonpath='{.spec.clusterIP}')}
port=${GLOBALDNS_PORT:-53}
zone=${name##*.}
unknown="smoke-$RANDOM-$RANDOM.$zone"
failures=0

check() { # description, condition result (0 = pass), details
  if [ "$2" -eq 0 ]; then echo "PASS  $1"; else echo "FAIL  $1: $3"; failures=$((failures + 1)); fi
}
ask() { dig @"$server" -p "$port" +tries=2 +time=3 "$@" 2>&1; }

out=$(ask "$name" A)
echo "$out" | grep -q "status: NOERROR" && echo "$out" | grep -qE "flags:[^;]* aa" &&
  echo "$out" | grep -qE "^$name\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+A[[:space:]]+$want$"
check "$name is $want (authoritative)" $? "$(echo "$out" | grep -E 'status|^[^;].*IN' | head -3)"

out=$(ask "$unknown" A)
echo "$out" | grep -q "status: NXDOMAIN"
check "$unknown does not exist (NXDOMAIN)" $? "$(echo "$out" | grep status)"

out=$(ask "$forwarded" A)
echo "$out" | grep -q "status: NOERROR" && echo "$out" | grep -qE "^[^;].*[[:space:]]IN[[:space:]]+(A|CNAME)[[:space:]]"
check "$forwarded is forwarded and answered" $? "$(echo "$out" | grep -E 'status|timed out' | head -2)"

if [ "$failures" -eq 0 ]; then echo "globaldns at $server:$port: all checks passed"; else echo "globaldns at $server:$port: $failures check(s) failed"; fi
[ "$failures" -eq 0 ]
