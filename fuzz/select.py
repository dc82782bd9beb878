#!/usr/bin/env python3
"""Picks the committed corpus of a target from its minimized working
corpus: greedy maximum coverage (the file adding the most libFuzzer
features not yet covered first, the smaller on a tie) within at most 200 files and
200 KB. Reads the control file of a libFuzzer merge
(`-merge=1 -merge_control_file=FILE`), which lists each input's features.

    select.py CONTROL_FILE OUT_DIR
"""

import os
import shutil
import sys

MAX_FILES = 200
MAX_BYTES = 200 * 1024


def main():
    control, out = sys.argv[1], sys.argv[2]
    with open(control) as f:
        lines = f.read().splitlines()
    n_files = int(lines[0])
    paths = lines[2 : 2 + n_files]
    features = {}
    for line in lines[2 + n_files :]:
        parts = line.split()
        if parts and parts[0] in ("FT", "COV"):
            idx = int(parts[1])
            features.setdefault(idx, set()).update((parts[0], x) for x in parts[2:])
    sizes = {i: os.path.getsize(paths[i]) for i in features}
    covered, chosen, total = set(), [], 0
    while len(chosen) < MAX_FILES:
        best, best_score = None, 0.0
        for i, fs in features.items():
            if total + sizes[i] > MAX_BYTES:
                continue
            gain = len(fs - covered)
            if gain == 0:
                continue
            score = gain - sizes[i] / MAX_BYTES
            if score > best_score:
                best, best_score = i, score
        if best is None:
            break
        covered |= features.pop(best)
        chosen.append(best)
        total += sizes[best]
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    for i in chosen:
        shutil.copy(paths[i], out)
    every = set()
    for line in lines[2 + n_files :]:
        parts = line.split()
        if parts and parts[0] in ("FT", "COV"):
            every.update((parts[0], x) for x in parts[2:])
    print(f"{out}: {len(chosen)} files, {total} bytes, {len(covered)}/{len(every)} features")


if __name__ == "__main__":
    main()
