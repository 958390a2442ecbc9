# Helpers that every module uses: one library per folder, tests beside the code,
# binaries in build/bin, sanitizer and warning flags in one place.

set(AIBRIX_WARNINGS -Wall -Wextra -Wpedantic -Wno-unused-parameter)
if(AIBRIX_WERROR)
  list(APPEND AIBRIX_WARNINGS -Werror)
endif()
if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  list(APPEND AIBRIX_WARNINGS -Wthread-safety -Wno-gnu-zero-variadic-macro-arguments)
endif()

if(AIBRIX_SANITIZE STREQUAL "asan")
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # GCC 12 reports false -Wmaybe-uninitialized inside gmock and <regex> under ASan.
    list(APPEND AIBRIX_WARNINGS -Wno-maybe-uninitialized)
  endif()
  add_link_options(-fsanitize=address,undefined)
elseif(AIBRIX_SANITIZE STREQUAL "tsan")
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  # GCC 12 warns that TSan does not model std::atomic_thread_fence, which Asio uses.
  list(APPEND AIBRIX_WARNINGS -Wno-tsan)
  add_link_options(-fsanitize=thread)
elseif(NOT AIBRIX_SANITIZE STREQUAL "")
  message(FATAL_ERROR "AIBRIX_SANITIZE must be '', 'asan' or 'tsan', not '${AIBRIX_SANITIZE}'")
endif()
if(NOT AIBRIX_SANITIZE STREQUAL "")
  # For tests whose measure a sanitizer's allocator distorts (RSS); compiler-neutral (clang 14
  # does not define GCC's __SANITIZE_ADDRESS__).
  add_compile_definitions(AIBRIX_SANITIZED)
endif()
# Link only the libraries a binary uses (GCC's Debian default, not clang's): the deploy check
# compares a binary's libraries with the runtime image's packages.
add_link_options(LINKER:--as-needed)
# Fuzz targets live in the ASan build: its objects get libFuzzer's coverage instrumentation
# (harmless for the tests), so one clang build serves the tests, the fuzzers and the
# -Wthread-safety check.
if(AIBRIX_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang" OR NOT AIBRIX_SANITIZE STREQUAL "asan")
    message(FATAL_ERROR "AIBRIX_FUZZ needs clang and ASan: -DCMAKE_CXX_COMPILER=clang++-14 -DAIBRIX_SANITIZE=asan")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()

# aibrix_library(<name> SRCS ... DEPS ...) -> target aibrix_<name>, alias aibrix::<name>.
function(aibrix_library name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  add_library(aibrix_${name} STATIC ${ARG_SRCS})
  add_library(aibrix::${name} ALIAS aibrix_${name})
  target_include_directories(aibrix_${name} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  target_compile_options(aibrix_${name} PRIVATE ${AIBRIX_WARNINGS})
  target_link_libraries(aibrix_${name} PUBLIC ${ARG_DEPS})
endfunction()

# aibrix_binary(<name> SRCS ... DEPS ...) -> build/bin/<name>.
function(aibrix_binary name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SRCS})
  target_compile_options(${name} PRIVATE ${AIBRIX_WARNINGS})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
endfunction()

# aibrix_test(<name> SRCS ... DEPS ... [LABELS ...]): a GoogleTest binary registered with CTest.
# Tests find their data files (tests/testdata: protocol vectors copied into the repository, so a
# clone alone passes its tests) through AIBRIX_TESTDATA_DIR and built binaries through
# AIBRIX_BIN_DIR (both compile definitions).
function(aibrix_test name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SRCS})
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  target_compile_options(${name} PRIVATE ${AIBRIX_WARNINGS})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR})
  target_compile_definitions(${name} PRIVATE
    AIBRIX_TESTDATA_DIR="${PROJECT_SOURCE_DIR}/tests/testdata"
    AIBRIX_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    AIBRIX_BIN_DIR="${CMAKE_BINARY_DIR}/bin")
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gmock GTest::gtest_main)
  gtest_discover_tests(${name} DISCOVERY_MODE PRE_TEST DISCOVERY_TIMEOUT 60
    PROPERTIES TIMEOUT 300 LABELS "${ARG_LABELS}")
endfunction()

# aibrix_bench(<name> SRCS ... DEPS ...) -> build/bin/<name>, linked with Google Benchmark.
function(aibrix_bench name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  if(NOT AIBRIX_BUILD_BENCH)
    return()
  endif()
  aibrix_binary(${name} SRCS ${ARG_SRCS} DEPS ${ARG_DEPS} benchmark::benchmark)
endfunction()

# aibrix_fuzz(<name> SRCS ... DEPS ... CORPUS dir): only with -DAIBRIX_FUZZ=ON (clang).
# A libFuzzer target. CORPUS is its seed directory (relative to the source root); every
# target is listed with its corpus in ${CMAKE_BINARY_DIR}/fuzz_targets.txt, which
# scripts/fuzz.sh runs, so a new target needs no script change.
function(aibrix_fuzz name)
  cmake_parse_arguments(ARG "" "CORPUS" "SRCS;DEPS" ${ARGN})
  if(NOT AIBRIX_FUZZ)
    return()
  endif()
  if(NOT ARG_CORPUS OR NOT IS_DIRECTORY "${PROJECT_SOURCE_DIR}/${ARG_CORPUS}")
    message(FATAL_ERROR "aibrix_fuzz(${name}): CORPUS must name a seed directory, got '${ARG_CORPUS}'")
  endif()
  aibrix_binary(${name} SRCS ${ARG_SRCS} DEPS ${ARG_DEPS})
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
  set_property(GLOBAL APPEND PROPERTY AIBRIX_FUZZ_TARGETS "${name} ${ARG_CORPUS}")
endfunction()

# Writes fuzz_targets.txt (call once, after every aibrix_fuzz).
function(aibrix_write_fuzz_manifest)
  if(NOT AIBRIX_FUZZ)
    return()
  endif()
  get_property(targets GLOBAL PROPERTY AIBRIX_FUZZ_TARGETS)
  list(JOIN targets "\n" text)
  file(WRITE "${CMAKE_BINARY_DIR}/fuzz_targets.txt" "${text}\n")
endfunction()
