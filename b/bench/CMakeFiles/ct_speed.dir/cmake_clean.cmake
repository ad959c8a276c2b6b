file(REMOVE_RECURSE
  "CMakeFiles/ct_speed.dir/speed.c.o"
  "CMakeFiles/ct_speed.dir/speed.c.o.d"
  "ct_speed"
  "ct_speed.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/ct_speed.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
