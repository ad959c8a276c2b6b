file(REMOVE_RECURSE
  "CMakeFiles/test_store.dir/test_store.c.o"
  "CMakeFiles/test_store.dir/test_store.c.o.d"
  "CMakeFiles/test_store.dir/testutil.c.o"
  "CMakeFiles/test_store.dir/testutil.c.o.d"
  "test_store"
  "test_store.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/test_store.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
