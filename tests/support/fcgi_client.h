#pragma once

#include <map>
#include <string>

namespace chatllm::testing {

struct FcgiResponse {
  bool ok = false;  // False: connect/IO failure or no END_REQUEST.
  int status = 0;   // From the CGI "Status:" header (200 if absent).
  std::map<std::string, std::string> headers;
  std::string body;
  std::string error;
};

// Sends one request straight to a FastCGI responder at 127.0.0.1:port,
// bypassing nginx, the way nginx does (FCGI_RESPONDER, no keep-conn).
// `params` are the CGI parameters; REQUEST_METHOD/REQUEST_URI/CONTENT_LENGTH
// are filled from the arguments unless given, HTTP_AUTHORIZATION with the
// stack's key (DefaultApiKey()) unless given ("" sends none).
FcgiResponse FcgiRequest(int port, const std::string& method, const std::string& uri, const std::string& body = "",
                         std::map<std::string, std::string> params = {}, int timeout_ms = 10000);

// Encodes a FastCGI request (all records) without sending it; used by the
// fuzz target for the request-to-route mapping.
std::string EncodeFcgiRequest(const std::map<std::string, std::string>& params, const std::string& body,
                              int request_id = 1);

}  // namespace chatllm::testing
