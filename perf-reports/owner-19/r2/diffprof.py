import re,subprocess,sys
def load(f,opt):
    out=subprocess.run(['callgrind_annotate',opt,'--threshold=99.9',f],capture_output=True,text=True).stdout
    d={}
    for l in out.split('\n'):
        m=re.match(r'\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)',l)
        if m: d[m.group(2).strip()]=int(m.group(1).replace(',',''))
    return d
a,b,n,k=sys.argv[1],sys.argv[2],int(sys.argv[3]),int(sys.argv[4])
for opt in ['--inclusive=yes','--inclusive=no']:
    A=load(a,opt);B=load(b,opt)
    rows=sorted(((B[x]-A.get(x,0))/n,x) for x in B)[::-1]
    print('==',opt)
    for v,x in rows[:k]:
        if v>=5: print('%7.0f %s'%(v,x[-150:]))
