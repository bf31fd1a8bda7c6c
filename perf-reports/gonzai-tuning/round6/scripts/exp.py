import sys, numpy as np, lightgbm as lgb
NC = 7 + 38
def load(p, off=0):
    a = np.fromfile(p, dtype='<f4').reshape(-1, NC)
    a[:, 0] += off
    return a
def feats(a):
    return np.hstack([a[:, 3:7], a[:, 8:]])
def groups(a):
    q = a[:, 0]
    _, idx, cnt = np.unique(q, return_index=True, return_counts=True)
    order = np.argsort(idx)
    return cnt[order]
def metrics(a, score, nq):
    # nq: number of queries (incl. those without rows)
    q = a[:, 0].astype(int); lab = a[:, 1] > 0
    h10 = 0; h1 = 0; hh = 0; mrr = 0
    harder = {}
    for qq in np.unique(q):
        m = q == qq
        s = score[m]; l = lab[m]
        harder[qq] = a[m, 2][0] > 0
        if not l.any(): continue
        sp = s[l][0]
        r = int((s > sp).sum())
        h10 += r < 10; h1 += r < 1; mrr += 1/(r+1)
        if harder[qq]: hh += r < 10
    return h10
def evaluate(a, score, held):
    q = a[:, 0].astype(int); lab = a[:, 1] > 0
    res = {}
    order = np.lexsort((-score, q))
    h10 = hh = nh = h1 = 0
    for qq in range(held):
        pass
    # vectorised per query
    starts = np.searchsorted(q[order], np.arange(held))
    ends = np.searchsorted(q[order], np.arange(held), side='right')
    qs = q[order]; ls = lab[order]; hs = a[order, 2] > 0
    for i in range(held):
        s, e = starts[i], ends[i]
        if s == e: continue
        har = hs[s]
        nh += har
        pos = np.nonzero(ls[s:e])[0]
        if len(pos) == 0: continue
        r = pos[0]
        h10 += r < 10; h1 += r < 1
        if har: hh += r < 10
    return h1/held, h10/held, hh/max(nh,1), nh

if __name__ == '__main__':
    import time
    tr_seeds = sys.argv[1].split(',')
    params = dict(objective='lambdarank', n_estimators=int(sys.argv[2]) if len(sys.argv)>2 else 300,
                  learning_rate=0.05, num_leaves=31, min_child_samples=50,
                  lambdarank_truncation_level=20, subsample=0.8, subsample_freq=1,
                  colsample_bytree=0.8, verbose=-1, n_jobs=2)
    tr = []
    off = 0
    for s in tr_seeds:
        a = load(f'/tmp/gz/d{s}.train', off)
        # only queries with a positive
        qpos = np.unique(a[a[:, 1] > 0, 0])
        a = a[np.isin(a[:, 0], qpos)]
        tr.append(a); off += 100000
    tr = np.vstack(tr)
    print('train rows', tr.shape, 'queries', len(np.unique(tr[:, 0])))
    t = time.time()
    m = lgb.LGBMRanker(**params)
    m.fit(feats(tr), tr[:, 1], group=groups(tr))
    print('fit', time.time() - t)
    for s in ['31337', '4242', '9001']:
        a = load(f'/tmp/gz/d{s}.eval')
        base = evaluate(a, a[:, 3], 1000)
        sc = m.predict(feats(a))
        # linear rank within query
        q = a[:, 0].astype(int)
        order = np.lexsort((-a[:, 3], q))
        lr = np.empty(len(a), int)
        starts = np.searchsorted(q[order], q[order])
        lr[order] = np.arange(len(a)) - starts
        out = [s, 'linear h1 %.3f h10 %.3f harder %.3f (%d)' % base]
        for K in (30, 50, 100, 200, 1000):
            sk = np.where(lr < K, sc + 1000, a[:, 3])
            out.append('K%d %.3f/%.3f' % ((K,) + evaluate(a, sk, 1000)[1:3]))
        print(' | '.join(out))
