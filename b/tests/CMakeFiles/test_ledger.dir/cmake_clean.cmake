file(REMOVE_RECURSE
  "CMakeFiles/test_ledger.dir/test_ledger.c.o"
  "CMakeFiles/test_ledger.dir/test_ledger.c.o.d"
  "CMakeFiles/test_ledger.dir/testutil.c.o"
  "CMakeFiles/test_ledger.dir/testutil.c.o.d"
  "test_ledger"
  "test_ledger.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/test_ledger.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
