# Registered tests, one line each; see tests/CMakeLists.txt.
