#!/usr/bin/env python3
# Prints the import cycles between the modules of a crate: the graph of `crate::a::b` paths
# and `super::` uses in src/ (test modules left out), and its strongly connected components.
# Usage: scripts/import-cycles.py crates/portcullis/src   (exit 1 when there is a cycle)
import os, re, sys
root = sys.argv[1]
mods = {}
for dirpath, _, files in os.walk(root):
    for f in files:
        if not f.endswith('.rs'): continue
        path = os.path.join(dirpath, f)
        rel = os.path.relpath(path, root)[:-3]
        parts = rel.split(os.sep)
        if parts[-1] in ('mod', 'lib', 'main'): parts = parts[:-1]
        name = '::'.join(parts) or 'crate'
        mods[name] = path
def top(name):  # compare at the level of top-level modules and their children
    return name
edges = {m: set() for m in mods}
for m, path in mods.items():
    text = open(path).read()
    # drop test modules
    text = re.split(r'#\[cfg\(test\)\]\s*mod tests', text)[0]
    for hit in re.findall(r'crate::([a-z_]+(?:::[a-z_]+)*)', text):
        parts = hit.split('::')
        for k in range(len(parts), 0, -1):
            cand = '::'.join(parts[:k])
            if cand in mods and cand != m:
                edges[m].add(cand); break
    parent = m.rsplit('::', 1)[0] if '::' in m else None
    for hit in re.findall(r'super::([a-z_]+)', text):
        if parent:
            cand = parent + '::' + hit
            if cand in mods and cand != m: edges[m].add(cand)
        elif hit in mods and hit != m: edges[m].add(hit)
# strongly connected components (Tarjan)
index, low, stack, on, out = {}, {}, [], set(), []
counter = [0]
def strong(v):
    index[v] = low[v] = counter[0]; counter[0] += 1; stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index:
            strong(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: out.append(sorted(comp))
sys.setrecursionlimit(10000)
for v in edges:
    if v not in index: strong(v)
for comp in out: print('cycle:', ' <-> '.join(comp))
if not out: print('no import cycles')
sys.exit(1 if out else 0)
