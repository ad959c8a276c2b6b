file(REMOVE_RECURSE
  "libceltrace.a"
  "libceltrace.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/celtrace_static.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
