# CMake generated Testfile for 
# Source directory: /work/main/bench
# Build directory: /work/main/b/bench
# 
# This file includes the relevant testing commands required for 
# testing this directory and lists subdirectories to be tested as well.
add_test(bench_negatives "/work/main/b/bench/ct_negatives" "/work/main/samples/images" "100" "7" "10")
set_tests_properties(bench_negatives PROPERTIES  TIMEOUT "600" _BACKTRACE_TRIPLES "/work/main/bench/CMakeLists.txt;13;add_test;/work/main/bench/CMakeLists.txt;0;")
