file(REMOVE_RECURSE
  "CMakeFiles/test_media_regress.dir/fuzz/regress_media.c.o"
  "CMakeFiles/test_media_regress.dir/fuzz/regress_media.c.o.d"
  "test_media_regress"
  "test_media_regress.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/test_media_regress.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
