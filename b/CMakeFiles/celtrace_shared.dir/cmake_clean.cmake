file(REMOVE_RECURSE
  "libceltrace.pdb"
  "libceltrace.so"
  "libceltrace.so.0"
  "libceltrace.so.0.1.0"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/celtrace_shared.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
