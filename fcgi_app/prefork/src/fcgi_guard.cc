#include "prefork/fcgi_guard.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdint>
#include <vector>

#include "base/time_util.h"

namespace chatllm {
namespace {

constexpr uint8_t kVersion = 1;
constexpr uint8_t kBeginRequest = 1;
constexpr uint8_t kParams = 4;
constexpr uint16_t kResponder = 1;
constexpr size_t kHeaderBytes = 8;

// Reads one name or value length (1 byte, or 4 with the top bit set).
bool ReadLength(std::string_view s, size_t* pos, size_t* out) {
  if (*pos >= s.size()) return false;
  const auto b0 = static_cast<uint8_t>(s[*pos]);
  if ((b0 & 0x80) == 0) {
    *out = b0;
    *pos += 1;
    return true;
  }
  if (s.size() - *pos < 4) return false;
  *out = (size_t{b0 & 0x7fu} << 24) | (size_t{static_cast<uint8_t>(s[*pos + 1])} << 16) |
         (size_t{static_cast<uint8_t>(s[*pos + 2])} << 8) | size_t{static_cast<uint8_t>(s[*pos + 3])};
  *pos += 4;
  return true;
}

// Every name-value pair of the whole parameter stream lies inside it.
bool PairsFit(std::string_view params, std::string* why) {
  size_t pos = 0;
  while (pos < params.size()) {
    size_t name = 0, value = 0;
    if (!ReadLength(params, &pos, &name) || !ReadLength(params, &pos, &value)) {
      *why = "truncated name-value length in FCGI_PARAMS";
      return false;
    }
    if (name > params.size() - pos || value > params.size() - pos - name) {
      *why = "name-value pair longer than FCGI_PARAMS";
      return false;
    }
    pos += name + value;
  }
  return true;
}

}  // namespace

FcgiHead CheckFcgiHead(std::string_view bytes, std::string* why) {
  size_t pos = 0;
  bool begun = false;
  uint16_t request_id = 0;
  std::string params;
  while (true) {
    if (bytes.size() - pos < kHeaderBytes) return FcgiHead::kIncomplete;
    const auto* h = reinterpret_cast<const uint8_t*>(bytes.data() + pos);
    const uint8_t version = h[0], type = h[1];
    const uint16_t id = static_cast<uint16_t>(h[2] << 8 | h[3]);
    const size_t length = static_cast<size_t>(h[4] << 8 | h[5]);
    const size_t padding = h[6];
    if (version != kVersion) {
      *why = "FastCGI version " + std::to_string(version);
      return FcgiHead::kInvalid;
    }
    if (bytes.size() - pos - kHeaderBytes < length + padding) return FcgiHead::kIncomplete;
    std::string_view content = bytes.substr(pos + kHeaderBytes, length);
    pos += kHeaderBytes + length + padding;
    if (!begun) {
      // No padding: libfcgi reads the 8-byte body and not the padding after
      // it, so with padding it would see other records than this check does.
      if (type != kBeginRequest || length != 8 || padding != 0 || id == 0) {
        *why = "a connection must start with FCGI_BEGIN_REQUEST (8 bytes, no padding)";
        return FcgiHead::kInvalid;
      }
      const uint16_t role =
          static_cast<uint16_t>(static_cast<uint8_t>(content[0]) << 8 | static_cast<uint8_t>(content[1]));
      if (role != kResponder) {
        *why = "role " + std::to_string(role) + " is not FCGI_RESPONDER";
        return FcgiHead::kInvalid;
      }
      begun = true;
      request_id = id;
      continue;
    }
    if (type != kParams || id != request_id) {
      *why = "expected FCGI_PARAMS of request " + std::to_string(request_id);
      return FcgiHead::kInvalid;
    }
    if (length == 0) return PairsFit(params, why) ? FcgiHead::kComplete : FcgiHead::kInvalid;
    if (params.size() + length > kMaxFcgiParamBytes) {
      *why = "FCGI_PARAMS larger than " + std::to_string(kMaxFcgiParamBytes) + " bytes";
      return FcgiHead::kInvalid;
    }
    params.append(content);
  }
}

FcgiHead PeekFcgiHead(int fd, int timeout_ms, std::string* why) {
  // Room for the largest head: parameters, their record headers and padding.
  thread_local std::vector<char> buf(kMaxFcgiParamBytes + kMaxFcgiParamBytes / 8 + 4096);
  const int64_t deadline = MonotonicMicros() + int64_t{timeout_ms} * 1000;
  size_t seen = 0;
  for (;;) {
    ssize_t n = ::recv(fd, buf.data(), buf.size(), MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      *why = "recv failed";
      return FcgiHead::kInvalid;
    }
    if (n == 0) {
      *why = "connection closed before the parameters ended";
      return FcgiHead::kInvalid;
    }
    if (n > 0 && static_cast<size_t>(n) != seen) {
      seen = static_cast<size_t>(n);
      FcgiHead head = CheckFcgiHead(std::string_view(buf.data(), seen), why);
      if (head != FcgiHead::kIncomplete) return head;
      if (seen == buf.size()) {
        *why = "request head larger than " + std::to_string(buf.size()) + " bytes";
        return FcgiHead::kInvalid;
      }
    }
    const int64_t left_ms = (deadline - MonotonicMicros()) / 1000;
    if (left_ms <= 0) {
      *why = "request head incomplete after " + std::to_string(timeout_ms) + " ms";
      return FcgiHead::kInvalid;
    }
    // Peeked bytes keep the socket readable: wait for new ones in short naps
    // (rare: nginx writes the whole head at once).
    if (seen == 0) {
      pollfd p{fd, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(left_ms));
    } else {
      ::poll(nullptr, 0, 1);
    }
  }
}

}  // namespace chatllm
