#pragma once

// Shared by the fuzz targets: a check that aborts (so libFuzzer reports the
// input) when a property every input must keep does not hold.

#include <rapidjson/document.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "base/http.h"

namespace chatllm::fuzz {

#define FUZZ_CHECK(cond)                                                               \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                    \
    }                                                                                  \
  } while (0)

// Every error the API sends is {"error":{"code":"...","message":"..."}} with a 4xx/5xx status.
inline void CheckErrorResponse(const HttpResponse& r) {
  FUZZ_CHECK(r.status >= 400 && r.status <= 599);
  rapidjson::Document doc;
  doc.Parse(r.body.c_str(), r.body.size());
  FUZZ_CHECK(!doc.HasParseError() && doc.IsObject() && doc.HasMember("error"));
  const rapidjson::Value& e = doc["error"];
  FUZZ_CHECK(e.IsObject() && e.HasMember("code") && e["code"].IsString() && e["code"].GetStringLength() > 0);
  FUZZ_CHECK(e.HasMember("message") && e["message"].IsString() && e["message"].GetStringLength() > 0);
}

}  // namespace chatllm::fuzz
