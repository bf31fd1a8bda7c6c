#!/bin/bash
# usage: round3.sh : a third run of every scenario, epoll and uring alternating.
cd "$(dirname "$0")"
for S in fanout100 fanout1000 idle ramp; do
  for IO in epoll uring; do ./run.sh $IO $S 3; done
done
