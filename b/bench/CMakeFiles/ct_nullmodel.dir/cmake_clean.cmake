file(REMOVE_RECURSE
  "CMakeFiles/ct_nullmodel.dir/nullmodel.c.o"
  "CMakeFiles/ct_nullmodel.dir/nullmodel.c.o.d"
  "ct_nullmodel"
  "ct_nullmodel.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/ct_nullmodel.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
