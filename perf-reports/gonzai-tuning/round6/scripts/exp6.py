from exp import *
import time
def prep(p, off=0):
    a = load(p)
    u, inv = np.unique(a[:, 0], return_inverse=True)
    a[:, 0] = inv + off
    return a, len(u)
def train_set(files):
    tr = []; off = 0
    for f in files:
        a, n = prep(f, off); off += n + 1
        qpos = np.unique(a[a[:, 1] > 0, 0]); tr.append(a[np.isin(a[:, 0], qpos)])
    return np.vstack(tr)
obj = sys.argv[1]; files = sys.argv[2].split(','); ntree = int(sys.argv[3]); leaves = int(sys.argv[4]); lr = float(sys.argv[5])
tr = train_set(files)
t = time.time()
kw = dict(n_estimators=ntree, learning_rate=lr, num_leaves=leaves, min_child_samples=100, subsample=0.8, subsample_freq=1, colsample_bytree=0.8, verbose=-1, n_jobs=2)
if obj == 'binary':
    m = lgb.LGBMClassifier(objective='binary', **kw); m.fit(feats(tr), tr[:, 1]); pred = lambda x: m.predict_proba(x)[:, 1]
else:
    m = lgb.LGBMRanker(objective=obj, **kw); m.fit(feats(tr), tr[:, 1], group=groups(tr)); pred = m.predict
print(sys.argv[1:], 'rows', len(tr), 'fit %.0fs' % (time.time() - t))
for s in ['31337', '4242', '9001', '5150']:
    a = load(f'/tmp/gz/d{s}.eval')
    b = evaluate(a, a[:, 3], 1000); g = evaluate(a, pred(feats(a)), 1000)
    print('  eval', s, 'linear %.3f %.3f %.3f' % b[:3], '| gbdt %.3f %.3f %.3f' % g[:3])
a, n = prep('/tmp/gz/d9001.train')
print('  9001.train linear %.3f %.3f %.3f' % evaluate(a, a[:, 3], n)[:3], '| gbdt %.3f %.3f %.3f' % evaluate(a, pred(feats(a)), n)[:3])
m.booster_.save_model('/tmp/gz/model-%s.txt' % obj)
