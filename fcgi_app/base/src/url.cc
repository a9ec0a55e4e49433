#include "base/url.h"

#include <Poco/Exception.h>
#include <Poco/URI.h>

namespace chatllm {

StatusOr<HttpUrl> ParseHttpUrl(std::string_view text) {
  if (text.find_first_of(" \t\r\n") != std::string_view::npos) return Status::Invalid("contains white space");
  Poco::URI uri;
  try {
    uri = Poco::URI(std::string(text));
  } catch (const Poco::SyntaxException& e) {
    return Status::Invalid(e.message());
  }
  HttpUrl url;
  url.scheme = uri.getScheme();
  if (url.scheme != "http" && url.scheme != "https") return Status::Invalid("is not an http:// or https:// URL");
  url.host = uri.getHost();
  if (url.host.empty()) return Status::Invalid("has no host");
  if (!uri.getUserInfo().empty()) {
    return Status::Invalid("carries credentials (user:password@); use api_key_env or api_key_file");
  }
  if (!uri.getRawQuery().empty() || !uri.getFragment().empty() || text.find_first_of("?#") != std::string_view::npos) {
    return Status::Invalid("has a query or fragment");
  }
  url.port = uri.getPort();
  url.origin = url.scheme + "://" + (url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host);
  if (uri.getSpecifiedPort() != 0) url.origin += ":" + std::to_string(url.port);
  url.path = uri.getPathEtc();
  while (!url.path.empty() && url.path.back() == '/') url.path.pop_back();
  return url;
}

}  // namespace chatllm
