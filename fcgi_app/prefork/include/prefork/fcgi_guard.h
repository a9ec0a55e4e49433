#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace chatllm {

// A check of a FastCGI connection's first bytes before libfcgi reads them.
//
// libfcgi 2.4.2 trusts the name and value lengths inside FCGI_PARAMS: a
// length pair that overflows makes it assert() (abort the worker) or
// allocate gigabytes; the fuzz target tests/fuzz/fcgi_request_fuzz.cc found
// both. nginx never sends such bytes, but anyone who can reach the FastCGI
// port could. So a worker first peeks at the request's head (its
// FCGI_BEGIN_REQUEST and FCGI_PARAMS records, up to the empty record that
// ends the parameters) and drops the connection unless every record is
// well formed and every name-value pair lies inside the parameter stream.
enum class FcgiHead {
  kComplete,    // Well formed up to the end of the parameters.
  kIncomplete,  // Well formed so far; more bytes are needed.
  kInvalid,     // Never from nginx: drop the connection.
};

// Largest parameter stream accepted (nginx sends its headers there; its own
// limit, large_client_header_buffers, is far below this).
constexpr size_t kMaxFcgiParamBytes = 128 * 1024;

// Pure: decides on the bytes received so far. *why says what is wrong.
FcgiHead CheckFcgiHead(std::string_view bytes, std::string* why);

// Peeks (MSG_PEEK: libfcgi still reads everything) at the socket until
// CheckFcgiHead decides or `timeout_ms` passes (then kInvalid).
FcgiHead PeekFcgiHead(int fd, int timeout_ms, std::string* why);

}  // namespace chatllm
