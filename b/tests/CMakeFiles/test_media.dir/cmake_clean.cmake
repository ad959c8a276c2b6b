file(REMOVE_RECURSE
  "CMakeFiles/test_media.dir/test_media.c.o"
  "CMakeFiles/test_media.dir/test_media.c.o.d"
  "CMakeFiles/test_media.dir/testutil.c.o"
  "CMakeFiles/test_media.dir/testutil.c.o.d"
  "test_media"
  "test_media.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/test_media.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
