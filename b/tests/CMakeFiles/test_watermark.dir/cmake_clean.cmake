file(REMOVE_RECURSE
  "CMakeFiles/test_watermark.dir/test_watermark.c.o"
  "CMakeFiles/test_watermark.dir/test_watermark.c.o.d"
  "CMakeFiles/test_watermark.dir/testutil.c.o"
  "CMakeFiles/test_watermark.dir/testutil.c.o.d"
  "test_watermark"
  "test_watermark.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/test_watermark.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
