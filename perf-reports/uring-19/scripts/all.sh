#!/bin/bash
# usage: all.sh : every scenario, epoll and uring alternating, 2 runs each.
cd "$(dirname "$0")"
echo "machine: $(nproc) cores; $(uname -a)"
echo "commit: $(git rev-parse HEAD)"
for S in fanout100 fanout1000 idle ramp; do
  for I in 1 2; do
    for IO in epoll uring; do ./run.sh $IO $S $I; done
  done
done
