"""Per-update cost from two callgrind runs of owner_instructions (N and 2N
updates): the difference divided by N. Usage:
callgrind_per_update.py RUN_N.out RUN_2N.out N"""
import re,subprocess,sys
def calls(f, fn):
    out=subprocess.run(['callgrind_annotate','--tree=caller',f],capture_output=True,text=True).stdout
    lines=out.split('\n'); total=0
    for i,l in enumerate(lines):
        if '*  ' in l and fn in l:
            j=i-1
            while j>=0 and '<' in lines[j]:
                m=re.search(r'\(([\d,]+)x\)',lines[j])
                if m: total+=int(m.group(1).replace(',',''))
                j-=1
    return total
def ir(f):
    for l in open(f):
        if l.startswith('totals:') or l.startswith('summary:'):
            return int(l.split()[1])
a,b,n=sys.argv[1],sys.argv[2],int(sys.argv[3])
print('Ir per update %.0f'%((ir(b)-ir(a))/n))
for fn in ['malloc.c:malloc [','malloc.c:free [','malloc.c:realloc [']:
    print(fn,'calls per update %.2f'%((calls(b,fn)-calls(a,fn))/n))
def incl(f, pat):
    out=subprocess.run(['callgrind_annotate','--inclusive=yes',f],capture_output=True,text=True).stdout
    for l in out.split('\n'):
        if pat in l:
            return int(l.split()[0].replace(',',''))
    return 0
for pat in ['Owner>::submit [','Owner>::committed [']:
    print(pat,'Ir per update %.0f'%((incl(b,pat)-incl(a,pat))/n))
