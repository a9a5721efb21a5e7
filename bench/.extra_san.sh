build-gpu/test_attn -b cuda -p "d=128," | tail -1
for f in "d=128,sq=300" "d=128,sq=17," "d=256,sq=300" "d=128,sq=113"; do for t in memcheck racecheck; do
  lg=$L/san_${t}_${f//[,=]/_}.log
  timeout 200 compute-sanitizer --tool $t --error-exitcode 9 build-gpu/test_attn -v -b cuda -p "$f" > $lg 2>&1
  echo "test_attn -p $f $t rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' $lg | tail -1) $(grep -E 'passed' $lg | tail -1)"
  grep -c 'ok .*ATTN_FWD(backend=cuda,dtype=b\?f16' $lg
done; done
