#!/bin/bash
# usage: stat-all.sh : stat.sh for epoll and uring alternating, 3 runs each.
cd "$(dirname "$0")"
for I in 1 2 3; do for IO in epoll uring; do ./stat.sh $IO $I; done; done
