# Imported targets for the third-party libraries, all from Debian 12 packages.
# Each wrapper exists because the package ships no usable CMake config.

find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)

# libfcgi ships only a pkg-config file.
pkg_check_modules(FCGI REQUIRED IMPORTED_TARGET fcgi)

# The shards are reached through libmariadb's C API (docs/architecture.md,
# "Poco, and where it is not used"); it ships only a pkg-config file.
pkg_check_modules(MARIADB REQUIRED IMPORTED_TARGET libmariadb)
# Poco's Foundation: URI parsing (base/url.h).
find_package(Poco 1.11 REQUIRED COMPONENTS Foundation)

# RapidJSON sets RAPIDJSON_INCLUDE_DIRS only; wrap it as a target.
find_package(RapidJSON REQUIRED)
if(NOT TARGET chatllm::rapidjson)
  add_library(chatllm::rapidjson INTERFACE IMPORTED)
  target_include_directories(chatllm::rapidjson INTERFACE ${RAPIDJSON_INCLUDE_DIRS})
  # std::string support in rapidjson::Value.
  target_compile_definitions(chatllm::rapidjson INTERFACE RAPIDJSON_HAS_STDSTRING=1)
endif()

# cpp-httplib: find_package(httplib) is not shipped; pkg-config carries the
# OpenSSL/zlib/brotli defines that must match the shared library.
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
# TLS for the provider clients, SHA-256 for turn digests.
find_package(OpenSSL REQUIRED)

if(CHATLLM_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
