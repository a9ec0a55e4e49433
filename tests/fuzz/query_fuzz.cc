// libFuzzer target: what arrives in the URL and headers before any database
// is asked: query strings of both list routes (including session cursors),
// the session id in the path, the API key in Authorization and the
// Idempotency-Key. Properties: no crash; a refusal is a 400 with the uniform
// error body; whatever parses round-trips (cursor, key, id).

#include <cctype>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "api/requests.h"
#include "base/api_key.h"
#include "base/http.h"
#include "base/ids.h"
#include "fuzz_support.h"

using namespace chatllm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  StatusOr<ListSessionsQuery> parsed_sessions = ParseListSessionsQuery(text);
  if (!parsed_sessions.ok()) {
    const Status& e = parsed_sessions.status();
    FUZZ_CHECK(e.http_status() == 400);
    fuzz::CheckErrorResponse(ErrorResponse(e.http_status(), e.code(), e.message()));
  } else {
    const ListSessionsQuery& sessions = *parsed_sessions;
    FUZZ_CHECK(sessions.limit >= 1 && sessions.limit <= kMaxPageLimit);
    if (!sessions.after_id.empty()) {
      // The cursor this page would hand out for the same position parses back to it.
      const std::string q = "after=" + SessionCursorText(sessions.after_created_us, sessions.after_id);
      StatusOr<ListSessionsQuery> again = ParseListSessionsQuery(q);
      FUZZ_CHECK(again.ok());
      FUZZ_CHECK(again->after_created_us == sessions.after_created_us && again->after_id == sessions.after_id);
    }
  }

  StatusOr<ListMessagesQuery> messages = ParseListMessagesQuery(text);
  if (!messages.ok()) {
    const Status& e = messages.status();
    FUZZ_CHECK(e.http_status() == 400);
    fuzz::CheckErrorResponse(ErrorResponse(e.http_status(), e.code(), e.message()));
  } else {
    FUZZ_CHECK(messages->limit >= 1 && messages->limit <= kMaxPageLimit);
  }

  if (std::optional<ApiKey> key = ParseApiKey(text)) {
    FUZZ_CHECK(key->id.size() == 8 && key->secret.size() == 32);
    // One spelling per key: the input is a Bearer scheme (any case), spaces
    // and the key printed back exactly.
    const std::string printed = FormatApiKey(*key);
    FUZZ_CHECK(text.size() > printed.size() + 6 && text.substr(text.size() - printed.size()) == printed);
    std::string scheme(text.substr(0, 6));
    for (char& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    FUZZ_CHECK(scheme == "bearer");
    FUZZ_CHECK(text.substr(6, text.size() - printed.size() - 6).find_first_not_of(' ') == std::string::npos);
  }

  if (std::optional<SessionId> id = SessionId::Parse(text)) {
    std::string lower(text);
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    FUZZ_CHECK(id->text() == lower);
    FUZZ_CHECK(id->bytes().size() == 16);
  }
  if (ValidIdempotencyKey(text)) FUZZ_CHECK(!text.empty() && text.size() <= 255);
  return 0;
}
