#pragma once

#include <string>
#include <string_view>

#include "base/status.h"

namespace chatllm {

// An http:// or https:// URL, split the way an HTTP client needs it.
struct HttpUrl {
  std::string scheme;  // "http" or "https".
  std::string host;    // Without brackets ("::1").
  int port = 0;        // The one given, or the scheme's.
  std::string origin;  // "https://host[:port]" (an IPv6 host in brackets).
  std::string path;    // Percent-encoded, without a trailing '/'; "" for none.
};

// Parses `text` with Poco::URI (RFC 3986: percent-encoding, IPv6 literals,
// port range). Refused, with the reason: another scheme, no host, a
// user:password part (credentials belong in api_key_env/api_key_file, not
// in a URL that reaches logs), a query or fragment, white space.
StatusOr<HttpUrl> ParseHttpUrl(std::string_view text);

}  // namespace chatllm
