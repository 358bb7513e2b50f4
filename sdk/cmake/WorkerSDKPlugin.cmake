# wk_add_plugin: builds a worker handler plugin (a MODULE library) with the SDK's export rules.
#
#   wk_add_plugin(<target> [SOURCES] <source>...
#                 [OUTPUT_DIRECTORY <dir>]   # default: ${CMAKE_BINARY_DIR}/plugins
#                 [OUTPUT_NAME <name>]       # file name without ".so"; default: <target>
#                 [CXX_STANDARD <17|20|23>]  # default: C++17 or whatever the project sets higher
#                 [LIBS <lib>...]            # linked PRIVATE (prefer static, hidden deps)
#                 [STATIC_RUNTIME])          # link libstdc++/libgcc statically (see docs/sdk.md)
#
# What it applies, and why (docs/sdk.md, "Building a plugin"):
#   - hidden visibility for everything, plus a version script that exports only
#     wk_plugin_entry_v1: plugins never interpose on each other or on the host;
#   - -z defs: no undefined symbols, so a plugin cannot depend on the host binary;
#   - --exclude-libs,ALL: symbols of static libraries linked in stay local;
#   - -fno-gnu-unique (GCC, C++ sources): no STB_GNU_UNIQUE symbols, which would pin the image in
#     memory;
#   - the file is named <name>.so (no "lib" prefix), which is what the host scans for.
# Works in-tree (WorkerSDK::sdk is an alias there) and from the installed package, and in a
# project that enables only C (project(... LANGUAGES C)): the C++ settings apply where C++ is.
include_guard(GLOBAL)

# Remembered globally: a function body sees the caller's CMAKE_CURRENT_LIST_DIR, not ours.
set_property(GLOBAL PROPERTY WK_SDK_PLUGIN_VERSION_SCRIPT "${CMAKE_CURRENT_LIST_DIR}/wk_plugin.map")

function(wk_add_plugin target)
  cmake_parse_arguments(PARSE_ARGV 1 WKP "STATIC_RUNTIME" "OUTPUT_DIRECTORY;OUTPUT_NAME;CXX_STANDARD"
                        "SOURCES;LIBS")
  set(sources ${WKP_SOURCES} ${WKP_UNPARSED_ARGUMENTS})
  if(NOT sources)
    message(FATAL_ERROR "wk_add_plugin(${target}): no sources given")
  endif()
  if(NOT TARGET WorkerSDK::sdk)
    message(FATAL_ERROR "wk_add_plugin(${target}): WorkerSDK::sdk is not defined; call find_package(WorkerSDK)")
  endif()
  get_property(version_script GLOBAL PROPERTY WK_SDK_PLUGIN_VERSION_SCRIPT)

  # In a C-only project there is no C++ compiler: its (empty) id must not decide the sanitizer
  # link below, and a C++ standard has nothing to apply to.
  get_property(enabled_languages GLOBAL PROPERTY ENABLED_LANGUAGES)
  if("CXX" IN_LIST enabled_languages)
    set(compiler_id "${CMAKE_CXX_COMPILER_ID}")
  else()
    set(compiler_id "${CMAKE_C_COMPILER_ID}")
  endif()

  add_library(${target} MODULE ${sources})
  target_link_libraries(${target} PRIVATE WorkerSDK::sdk ${WKP_LIBS})
  if("CXX" IN_LIST enabled_languages)
    target_compile_features(${target} PRIVATE cxx_std_17)
  endif()
  if(WKP_CXX_STANDARD)
    set_target_properties(${target} PROPERTIES CXX_STANDARD ${WKP_CXX_STANDARD} CXX_STANDARD_REQUIRED ON)
  endif()

  if(NOT WKP_OUTPUT_DIRECTORY)
    set(WKP_OUTPUT_DIRECTORY "${CMAKE_BINARY_DIR}/plugins")
  endif()
  set_target_properties(${target} PROPERTIES
    PREFIX ""
    SUFFIX ".so"
    C_VISIBILITY_PRESET hidden
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    POSITION_INDEPENDENT_CODE ON
    LIBRARY_OUTPUT_DIRECTORY "${WKP_OUTPUT_DIRECTORY}"
    LINK_DEPENDS "${version_script}")
  if(WKP_OUTPUT_NAME)
    set_target_properties(${target} PROPERTIES OUTPUT_NAME "${WKP_OUTPUT_NAME}")
  endif()

  # Unique symbols come from C++ vague linkage (inline and template statics); C has none.
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANG_AND_ID:CXX,GNU>:-fno-gnu-unique>)

  if(UNIX AND NOT APPLE)
    target_link_options(${target} PRIVATE "LINKER:--version-script=${version_script}"
                        "LINKER:--exclude-libs,ALL")
    # Sanitizer builds: the runtime must be linked into the module too, or -z defs rejects the
    # instrumentation's references. GCC links libasan/libubsan when -fsanitize is on the link
    # line; CMake passes CMAKE_<LANG>_FLAGS when linking, and we add the flags again in case
    # they were only given as compile options. Clang never links the runtime into a shared
    # object (the executable provides it), so there -z defs cannot hold and is left out.
    string(REGEX MATCHALL "-fsanitize=[^ ]+" sanitizers "${CMAKE_CXX_FLAGS} ${CMAKE_C_FLAGS}")
    list(REMOVE_DUPLICATES sanitizers)
    if(sanitizers AND compiler_id MATCHES "Clang")
      target_link_options(${target} PRIVATE ${sanitizers})
    else()
      target_link_options(${target} PRIVATE ${sanitizers} "LINKER:-z,defs")
    endif()
    if(WKP_STATIC_RUNTIME)
      target_link_options(${target} PRIVATE -static-libstdc++ -static-libgcc)
    endif()
  endif()

  # Every plugin made here is remembered, so that a test can check the export rules of all.
  set_property(GLOBAL APPEND PROPERTY WK_SDK_PLUGIN_TARGETS ${target})

  # In-tree only: our own plugins and fixtures get the project's warning set.
  if(TARGET wk_warnings)
    target_link_libraries(${target} PRIVATE wk_warnings)
  endif()
endfunction()
