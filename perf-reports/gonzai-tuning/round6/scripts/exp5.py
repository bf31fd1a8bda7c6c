from exp import *
def prep(s):
    a = load(f'/tmp/gz/d{s}.train')
    u, inv = np.unique(a[:, 0], return_inverse=True)
    a[:, 0] = inv
    return a, len(u)
tr, n = prep('31337')
print('groups ok', groups(tr).sum() == len(tr), len(groups(tr)), n)
qpos = np.unique(tr[tr[:, 1] > 0, 0]); trp = tr[np.isin(tr[:, 0], qpos)]
print('positives per query', np.bincount(np.bincount(trp[:,0].astype(int))[qpos.astype(int)] ))
m = lgb.LGBMClassifier(objective='binary', n_estimators=100, learning_rate=0.05, num_leaves=31, min_child_samples=50, verbose=-1, n_jobs=2)
m.fit(feats(trp), trp[:, 1])
print('train-self linear %.3f %.3f %.3f' % evaluate(tr, tr[:,3], n)[:3], 'gbdt %.3f %.3f %.3f' % evaluate(tr, m.predict_proba(feats(tr))[:,1], n)[:3])
imp = sorted(zip(m.feature_importances_, range(41)), reverse=True)[:10]; print(imp)
