file(REMOVE_RECURSE
  "CMakeFiles/celtrace.dir/cli/main.c.o"
  "CMakeFiles/celtrace.dir/cli/main.c.o.d"
  "CMakeFiles/celtrace.dir/cli/pool.c.o"
  "CMakeFiles/celtrace.dir/cli/pool.c.o.d"
  "celtrace"
  "celtrace.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/celtrace.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
