from exp import *
import time
def prep(s):
    a = load(f'/tmp/gz/d{s}.train')
    # renumber queries 0..n-1
    u, inv = np.unique(a[:, 0], return_inverse=True)
    a[:, 0] = inv
    return a, len(u)
tr, _ = prep('31337')
qpos = np.unique(tr[tr[:, 1] > 0, 0]); trp = tr[np.isin(tr[:, 0], qpos)]
m = lgb.LGBMRanker(objective='lambdarank', n_estimators=200, learning_rate=0.05, num_leaves=31, min_child_samples=50, lambdarank_truncation_level=20, verbose=-1, n_jobs=2)
m.fit(feats(trp), trp[:, 1], group=groups(trp))
for name, (a, n) in [('9001.train', prep('9001')), ('9001.eval', (load('/tmp/gz/d9001.eval'), 1000))]:
    b = evaluate(a, a[:, 3], n); g = evaluate(a, m.predict(feats(a)), n)
    # non-harder
    print(name, n, 'linear %.3f %.3f %.3f' % b[:3], 'gbdt %.3f %.3f %.3f' % g[:3])
