#!/usr/bin/env python3
"""Import circles between the modules (files) of one crate: prints each circle with its
edges and exits 1 when there is one. A module's references are read as text (`crate::`,
`super::` paths and `use crate::{...}` lists, comments and the `tests` module left out), so it
is a reviewer's check, not a compiler's; scripts/test.sh runs it on every crate.

usage: check-module-cycles.py CRATE_SRC_DIR...
"""
import os, re, sys
from collections import defaultdict


def cycles(root):
    files = {}
    for d, _, fs in os.walk(root):
        for f in fs:
            if f.endswith('.rs'):
                p = os.path.join(d, f)
                rel = os.path.relpath(p, root)[:-3]
                parts = rel.split('/')
                if parts[-1] in ('mod', 'lib', 'main'): parts = parts[:-1]
                files['::'.join(parts)] = p
    mods = set(files)
    def strip_tests(text):
        i = text.find('#[cfg(test)]\nmod tests')
        return text if i < 0 else text[:i]
    edges = defaultdict(set)
    for m, p in files.items():
        if m.endswith('tests') or '::tests' in m: continue
        text = strip_tests(open(p).read())
        text = re.sub(r'//.*', '', text)
        # expand use crate::{a, b::{c}} roughly: collect crate:: paths
        refs = set()
        for mm in re.finditer(r'crate::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)', text):
            refs.add(mm.group(1))
        for mm in re.finditer(r'use crate::\{([^;]*)\};', text, re.S):
            body = mm.group(1)
            for tok in re.findall(r'([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)', body):
                refs.add(tok)
        for mm in re.finditer(r'super::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)', text):
            parent = m.split('::')[:-1] if m else []
            refs.add('::'.join(parent + [mm.group(1)]) if parent else mm.group(1))
        for r in refs:
            parts = r.split('::')
            # longest prefix that is a module
            for k in range(len(parts), 0, -1):
                cand = '::'.join(parts[:k])
                if cand in mods:
                    if cand != m and not m.startswith(cand + '::') and not cand.startswith(m + '::') and cand != '':
                        edges[m].add(cand)
                    break
    # tarjan
    index = {}; low = {}; stack = []; on = set(); sccs = []; c = [0]
    sys.setrecursionlimit(10000)
    def sc(v):
        index[v] = low[v] = c[0]; c[0] += 1; stack.append(v); on.add(v)
        for w in edges[v]:
            if w not in index: sc(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: sccs.append(comp)
    for v in list(mods):
        if v not in index: sc(v)
    return [(sorted(comp), {a: sorted(x for x in edges[a] if x in comp) for a in comp}) for comp in sccs]


found = 0
for root in sys.argv[1:]:
    for comp, edges in cycles(root):
        found += 1
        print(f"{root}: import circle of {len(comp)} modules:")
        for a in comp:
            print(f"    {a} -> {', '.join(edges[a])}")
sys.exit(1 if found else 0)
