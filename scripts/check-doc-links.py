#!/usr/bin/env python3
"""Checks that every relative markdown link in README.md, ARCHITECTURE.md and docs/*.md
resolves to a file inside the repository (and, for #fragments into .md files, to a heading).
Usage: python3 scripts/check-doc-links.py [REPO_ROOT]"""
import re, os, sys, glob
root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
files = [os.path.join(root, f) for f in ("README.md", "ARCHITECTURE.md")] + sorted(glob.glob(os.path.join(root, "docs", "*.md")))
link = re.compile(r'(?<!\!)\[[^\]]*\]\(([^)\s]+)\)')
def slug(h):
    h = h.strip().lower()
    h = re.sub(r'[`*_~]', '', h)
    h = re.sub(r'[^\w\- ]', '', h)
    return h.replace(' ', '-')
def anchors(path):
    out = set(); seen = {}
    in_code = False
    for line in open(path, encoding='utf-8'):
        if line.startswith('```'): in_code = not in_code; continue
        if in_code: continue
        m = re.match(r'#{1,6}\s+(.*)', line)
        if m:
            s = slug(m.group(1)); n = seen.get(s, 0); seen[s] = n + 1
            out.add(s if n == 0 else f"{s}-{n}")
    return out
bad = 0; count = 0
for f in files:
    text = open(f, encoding='utf-8').read()
    text_nocode = re.sub(r'```.*?```', '', text, flags=re.S)
    for target in link.findall(text_nocode):
        count += 1
        if re.match(r'^[a-z]+:', target):
            print(f"{f}: external link {target}"); bad += 1; continue
        path, _, frag = target.partition('#')
        dest = os.path.normpath(os.path.join(os.path.dirname(f), path)) if path else f
        if not os.path.realpath(dest).startswith(os.path.realpath(root) + os.sep) and os.path.realpath(dest) != os.path.realpath(root):
            print(f"{f}: outside the repository: {target}"); bad += 1; continue
        if not os.path.exists(dest):
            print(f"{f}: missing: {target}"); bad += 1; continue
        if frag and dest.endswith('.md') and frag not in anchors(dest):
            print(f"{f}: no anchor #{frag} in {path or os.path.basename(f)}"); bad += 1
print(f"{count} links checked, {bad} problems")
sys.exit(1 if bad else 0)
