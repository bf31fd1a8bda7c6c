import re, glob, statistics, sys
d='/work/wt-perf/perf-reports/perf-19/'
def rd(prefix):
    rows=[]
    for md in sorted(glob.glob(d+prefix+'.md')):
        t=open(md).read()
        p99=float(re.search(r'write -> delivery \| .*?p99 ([\d.]+) ms',t).group(1))
        p50=float(re.search(r'write -> delivery \| p50 ([\d.]+) ms',t).group(1))
        lost=re.search(r'lost / duplicates \| (\d+) / (\d+)',t).groups()
        cpu=float(re.search(r'server CPU \| ([\d.]+)%',t).group(1))
        gen=float(re.search(r'generator CPU: ([\d.]+)%',t).group(1))
        base=md[:-3]
        try:
            tc=float(open(base+'.server-perf.csv').read().split('task-clock')[0].strip().split('\n')[-1].split(',')[0])/1000
            gtc=float(open(base+'.generator-perf.csv').read().split('task-clock')[0].strip().split('\n')[-1].split(',')[0])/1000
        except Exception: tc=gtc=float('nan')
        rows.append((md.split('/')[-1][:-3],p50,p99,lost,cpu,gen,tc,gtc))
    return rows
for pre in sys.argv[1:]:
    rows=rd(pre)
    for r in rows: print('%-28s p50 %9.1f p99 %9.1f lost %s/%s srvCPU %5.1f%% genCPU %5.1f%% srv-cpu-s %6.2f gen-cpu-s %6.2f'%(r[0],r[1],r[2],r[3][0],r[3][1],r[4],r[5],r[6],r[7]))
    if rows:
        print('  MEDIAN p50 %.1f p99 %.1f srv-cpu-s %.2f gen-cpu-s %.2f'%(statistics.median(r[1] for r in rows),statistics.median(r[2] for r in rows),statistics.median(r[6] for r in rows),statistics.median(r[7] for r in rows)))
