#!/usr/bin/env python3
# Lines of code per source file, test modules left out (everything from the first
# `#[cfg(test)]` on), with the largest files and the median. Usage:
#   scripts/file-sizes.py crates/portcullis/src crates/gateway/src
import os, sys, statistics
sizes = []
for root in sys.argv[1:]:
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith('.rs') and f != 'tests.rs':
                path = os.path.join(dirpath, f)
                text = open(path).read().split('#[cfg(test)]')[0]
                sizes.append((text.count('\n'), path))
sizes.sort()
for n, path in sizes[-12:]:
    print(f'{n:6} {path}')
print(f'files {len(sizes)}, median {statistics.median(n for n, _ in sizes)}, largest {sizes[-1][0]}')
