"""Per-update cost from two callgrind runs of owner_instructions (N and 2N
updates): the difference divided by N. Usage:
callgrind_per_update.py RUN_N.out RUN_2N.out N

Allocation calls are counted at whichever allocator the binary has: glibc's
(`malloc`, `realloc`, `free`) or mimalloc's, as Rust's global allocator
calls it (`mi_malloc_aligned`, `mi_zalloc_aligned`, `mi_realloc_aligned`,
`mi_free`)."""
import re,subprocess,sys
def annotate(f, *opts):
    return subprocess.run(['callgrind_annotate', *opts, f],capture_output=True,text=True).stdout
def calls(tree, fn):
    lines=tree.split('\n'); total=0
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
def incl(out, pat):
    for l in out.split('\n'):
        if pat in l:
            return int(l.split()[0].replace(',',''))
    return 0
a,b,n=sys.argv[1],sys.argv[2],int(sys.argv[3])
print('Ir per update %.0f'%((ir(b)-ir(a))/n))
ta,tb=annotate(a,'--tree=caller'),annotate(b,'--tree=caller')
for fn in ['malloc.c:malloc [','malloc.c:realloc [','malloc.c:free [',
           ':mi_malloc_aligned [',':mi_zalloc_aligned [',':mi_realloc_aligned [',':mi_free [']:
    c=(calls(tb,fn)-calls(ta,fn))/n
    if calls(tb,fn):
        print(fn,'calls per update %.2f'%c)
ia,ib=annotate(a,'--inclusive=yes'),annotate(b,'--inclusive=yes')
for pat in ['Owner>::submit [','owner_work::commit [','Owner>::committed [','Owner>::committed_into [','Owner>::take_group [']:
    print(pat,'Ir per update %.0f'%((incl(ib,pat)-incl(ia,pat))/n))
