file(REMOVE_RECURSE
  "CMakeFiles/test_informed.dir/test_informed.c.o"
  "CMakeFiles/test_informed.dir/test_informed.c.o.d"
  "CMakeFiles/test_informed.dir/testutil.c.o"
  "CMakeFiles/test_informed.dir/testutil.c.o.d"
  "test_informed"
  "test_informed.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/test_informed.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
