# Install layout and the Debian packages (CPack DEB, one package per component):
#   autodevs-worker      the `worker` binary, the shipped plugins, systemd/supervisor units, docs
#   autodevs-worker-sdk  headers + CMake package for building plugins out of tree
# Build them with: cmake --build <dir> --target package   (or: cd <dir> && cpack -G DEB)
set(WK_PACKAGING_DIR ${CMAKE_CURRENT_LIST_DIR})

if(TARGET worker)
  install(TARGETS worker RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT worker)
endif()
# The shipped plugins' .so files only (a directory install also copied the build's empty
# CMakeFiles/ and per-plugin folders).
foreach(wk_plugin autodevs_planning autodevs_worktree autodevs_ai)
  if(TARGET ${wk_plugin})
    install(TARGETS ${wk_plugin} LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}/autodevs-worker/plugins
            COMPONENT worker PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
  endif()
endforeach()
install(FILES ${WK_PACKAGING_DIR}/systemd/autodevs-worker.service DESTINATION lib/systemd/system COMPONENT worker)
install(FILES ${WK_PACKAGING_DIR}/supervisor/autodevs-worker.conf
        DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/autodevs-worker/examples COMPONENT worker)
install(FILES ${CMAKE_SOURCE_DIR}/config/example.env DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/autodevs-worker/examples
        COMPONENT worker OPTIONAL)
file(GLOB wk_docs ${CMAKE_SOURCE_DIR}/docs/*.md)
install(FILES ${wk_docs} DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/autodevs-worker COMPONENT worker)
# Debian keeps a package's licence as /usr/share/doc/<package>/copyright.
install(FILES ${CMAKE_SOURCE_DIR}/LICENSE DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/autodevs-worker
        RENAME copyright COMPONENT worker)
install(FILES ${CMAKE_SOURCE_DIR}/LICENSE DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/autodevs-worker-sdk
        RENAME copyright COMPONENT sdk)

set(CPACK_PACKAGE_NAME autodevs-worker)
set(CPACK_PACKAGE_VENDOR "AutoDevs")
set(CPACK_PACKAGE_CONTACT "AutoDevs <dev@autodevs.local>")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "AutoDevs background job worker: asynq-compatible Redis queues, C ABI handler plugins")
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL worker sdk)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
# Stripped binaries in the packages: CPack splits their debug info into -dbgsym packages beside
# them (.ddeb, found through the build id), for those who debug a production crash.
set(CPACK_DEBIAN_DEBUGINFO_PACKAGE ON)
set(CPACK_DEBIAN_PACKAGE_SECTION misc)
set(CPACK_DEBIAN_WORKER_PACKAGE_NAME autodevs-worker)
set(CPACK_DEBIAN_WORKER_PACKAGE_SHLIBDEPS OFF)
set(CPACK_DEBIAN_WORKER_PACKAGE_DEPENDS
    "libhiredis0.14, libssl3, libpq5, libspdlog1.10, libfmt9, libcurl4, libnettle8, libboost-filesystem1.74.0, git, adduser")
set(CPACK_DEBIAN_WORKER_PACKAGE_CONTROL_EXTRA "${WK_PACKAGING_DIR}/debian/postinst;${WK_PACKAGING_DIR}/debian/postrm")
set(CPACK_DEBIAN_SDK_PACKAGE_NAME autodevs-worker-sdk)
set(CPACK_DEBIAN_SDK_PACKAGE_ARCHITECTURE all)
set(CPACK_DEBIAN_SDK_PACKAGE_DEPENDS "cmake (>= 3.16)")
# wk_payload.hpp (WorkerSDK::payload) reads payloads with nlohmann/json.
set(CPACK_DEBIAN_SDK_PACKAGE_RECOMMENDS "nlohmann-json3-dev")
set(CPACK_COMPONENT_WORKER_DESCRIPTION "The worker host, the shipped plugins and service units")
set(CPACK_COMPONENT_SDK_DESCRIPTION "Headers and CMake package for building worker plugins out of tree")
include(CPack)
