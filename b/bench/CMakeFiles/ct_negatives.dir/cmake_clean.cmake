file(REMOVE_RECURSE
  "CMakeFiles/ct_negatives.dir/negatives.c.o"
  "CMakeFiles/ct_negatives.dir/negatives.c.o.d"
  "ct_negatives"
  "ct_negatives.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/ct_negatives.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
