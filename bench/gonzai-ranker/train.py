#!/usr/bin/env python3
"""Fits Gonzai's re-ranker (server/src/gonzai/ranker.rs) and writes ranker.json.

Input: dumps of `gitmind-load suggest --offline --seed S --dump PATH`, which
hold, for links hidden in the training graph of split S (PATH.train) and for
the split's held-out queries (PATH.eval), every candidate's ranking inputs,
best linear score first. Each row is little-endian f32: query, label (1: the
hidden target), harder (the target is not among the 100 most depended-on),
then the inputs named by the dump's model (`suggest::input_names`).

Trees are fitted with LightGBM's lambdarank objective on the candidates the
server orders again (the best DEPTH of the linear score) of every query
whose hidden target is among them; a logistic map from the trees' score to a
confidence is fitted on the same rows. The figures printed for each
`--eval` dump are hits@1, hits@10 and harder hits@10 of the linear score
alone and of the trees over it, as the server ranks.

    python3 -m venv venv && venv/bin/pip install -r requirements.txt
    venv/bin/python train.py --train m31337.train m4242.train m9001.train \\
        --eval m5150.eval --names m5150.names --trees 300 --leaves 127 --depth 12 \\
        --rate 0.1 --out ../../server/src/gonzai/ranker.json

(the shipped ranker; perf-reports/gonzai-tuning/round6.md)
"""

import argparse
import json

import lightgbm as lgb
import numpy as np
from sklearn.linear_model import LogisticRegression

HEAD = 3
DEPTH = 100
# The inputs' names (--names): how many columns follow HEAD.
NAMES = []


def load(path):
    """The rows of a dump, queries numbered as the dump numbers them."""
    return np.fromfile(path, dtype="<f4").reshape(-1, HEAD + len(NAMES))


def linear_rank(a):
    """Each row's place in its query (rows come best linear score first)."""
    q = a[:, 0].astype(np.int64)
    first = np.searchsorted(q, q)
    return np.arange(len(a)) - first


def train_rows(paths):
    rows, queries = [], 0
    for p in paths:
        a = load(p)
        a = a[linear_rank(a) < DEPTH]
        hit = np.unique(a[a[:, 1] > 0, 0])
        a = a[np.isin(a[:, 0], hit)]
        _, a[:, 0] = np.unique(a[:, 0], return_inverse=True)
        a[:, 0] += queries
        queries = int(a[:, 0].max()) + 1
        rows.append(a)
    return np.vstack(rows)


def group_sizes(a):
    return np.bincount(a[:, 0].astype(np.int64))


def figures(a, score, queries):
    """hits@1, hits@10 and harder hits@10 of ranking by `score`."""
    q = a[:, 0].astype(np.int64)
    h1 = h10 = hh = 0
    harder = np.zeros(queries, bool)
    harder[q] = a[:, 2] > 0
    # Only queries whose target is a candidate can count; the others
    # (and queries without rows) are misses.
    for i in np.unique(q[a[:, 1] > 0]):
        m = q == i
        s = score[m]
        pos = s[a[m, 1] > 0][0]
        # Ties go to the better linear score, which comes first.
        r = int((s > pos).sum() + (s[: np.argmax(a[m, 1] > 0)] == pos).sum())
        h1 += r < 1
        h10 += r < 10
        hh += harder[i] and r < 10
    return h1 / queries, h10 / queries, hh / max(harder.sum(), 1)


def served_score(a, trees):
    """The order the server gives: the best DEPTH by the trees, then the rest."""
    top = linear_rank(a) < DEPTH
    score = a[:, HEAD].astype(np.float64) - 1e6
    score[top] = trees.predict(a[top, HEAD:], raw_score=True) + 1e6
    return score


def tree_arrays(t):
    f, thr, left, right, leaves = [], [], [], [], {}

    def child(n):
        if "leaf_index" in n:
            leaves[n["leaf_index"]] = n["leaf_value"]
            return ~n["leaf_index"]
        return n["split_index"]

    def walk(n):
        if "leaf_index" in n:
            return
        assert n["decision_type"] == "<=" and n["missing_type"] == "None", n
        i = n["split_index"]
        while len(f) <= i:
            f.append(0), thr.append(0.0), left.append(0), right.append(0)
        f[i], thr[i] = n["split_feature"], n["threshold"]
        left[i], right[i] = child(n["left_child"]), child(n["right_child"])
        walk(n["left_child"])
        walk(n["right_child"])

    root = t["tree_structure"]
    if "leaf_value" in root and "split_index" not in root:
        return {"f": [], "t": [], "l": [], "r": [], "v": [root["leaf_value"]]}
    walk(root)
    return {"f": f, "t": thr, "l": left, "r": right, "v": [leaves[i] for i in range(len(leaves))]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", nargs="+", required=True)
    ap.add_argument("--eval", nargs="*", default=[])
    ap.add_argument("--names", required=True, help="the inputs' names, one per line")
    ap.add_argument("--trees", type=int, default=300)
    ap.add_argument("--leaves", type=int, default=31)
    ap.add_argument("--depth", type=int, default=-1, help="the trees' greatest depth (-1: any)")
    ap.add_argument("--rate", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--queries", type=int, default=1000, help="held-out queries of each --eval dump"
    )
    ap.add_argument("--out")
    args = ap.parse_args()
    NAMES[:] = [n for n in open(args.names).read().split("\n") if n]

    a = train_rows(args.train)
    print(f"training rows {len(a)}, queries {int(a[:, 0].max()) + 1}")
    trees = lgb.LGBMRanker(
        objective="lambdarank",
        n_estimators=args.trees,
        learning_rate=args.rate,
        num_leaves=args.leaves,
        max_depth=args.depth,
        min_child_samples=100,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.8,
        random_state=args.seed,
        deterministic=True,
        force_row_wise=True,
        n_jobs=2,
        verbose=-1,
    )
    trees.fit(a[:, HEAD:], a[:, 1], group=group_sizes(a))
    booster = trees.booster_
    raw = booster.predict(a[:, HEAD:], raw_score=True)
    platt = LogisticRegression(C=1e6).fit(raw.reshape(-1, 1), a[:, 1])

    for p in args.eval:
        e = load(p)
        queries = args.queries
        lin = figures(e, e[:, HEAD].astype(np.float64), queries)
        served = figures(e, served_score(e, booster), queries)
        print(
            f"{p}: linear hits@1 {lin[0]:.3f} hits@10 {lin[1]:.3f} harder {lin[2]:.3f}"
            f" | trees hits@1 {served[0]:.3f} hits@10 {served[1]:.3f} harder {served[2]:.3f}"
        )

    if args.out:
        model = booster.dump_model()
        pick = np.random.default_rng(args.seed).choice(len(a), 20, replace=False)
        x = a[pick, HEAD:]
        out = {
            "inputs": NAMES,
            "depth": DEPTH,
            "scale": float(platt.coef_[0][0]),
            "offset": float(platt.intercept_[0]),
            "trees": [tree_arrays(t) for t in model["tree_info"]],
            "checks": [
                [[float(v) for v in row], float(s)]
                for row, s in zip(x, booster.predict(x, raw_score=True))
            ],
        }
        with open(args.out, "w") as f:
            json.dump(out, f, separators=(",", ":"))
            f.write("\n")
        print(f"wrote {args.out}: {len(out['trees'])} trees")


if __name__ == "__main__":
    main()
