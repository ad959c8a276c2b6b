# Registered tests, one line each; see tests/CMakeLists.txt.
ct_unit_test(test_keys)
ct_unit_test(test_store)
ct_cli_test(foundation)
ct_cli_test(install)
ct_unit_test(test_media)
# test_media_regress replays tests/fuzz/{corpus,regress}/media (see tests/fuzz/regress_media.c).
add_executable(test_media_regress fuzz/regress_media.c)
target_include_directories(test_media_regress PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/include)
target_link_libraries(test_media_regress PRIVATE celtrace_static)
add_test(NAME test_media_regress COMMAND test_media_regress ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/media ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/regress/media)
ct_unit_test(test_watermark)
ct_cli_test(image)
ct_unit_test(test_verify)
# The quick benchmark gate measures the mark, not memory safety: it runs in the
# plain build only (under the sanitizers it would take most of the time budget).
if(NOT CELTRACE_SANITIZE)
  ct_cli_test(bench_gate)
endif()
ct_unit_test(test_ledger)
ct_cli_test(ledger)
ct_cli_test(video)
ct_unit_test(test_informed)
ct_cli_test(informed)
