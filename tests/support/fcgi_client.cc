#include "support/fcgi_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "support/stack_env.h"

namespace chatllm::testing {
namespace {

enum : uint8_t { kBeginRequest = 1, kEndRequest = 3, kParams = 4, kStdin = 5, kStdout = 6, kStderr = 7 };

void AppendRecord(std::string* out, uint8_t type, int id, const std::string& content) {
  size_t pos = 0;
  do {
    size_t len = std::min<size_t>(content.size() - pos, 65535);
    uint8_t pad = static_cast<uint8_t>((8 - len % 8) % 8);
    unsigned char h[8] = {1,
                          type,
                          static_cast<unsigned char>(id >> 8),
                          static_cast<unsigned char>(id),
                          static_cast<unsigned char>(len >> 8),
                          static_cast<unsigned char>(len),
                          pad,
                          0};
    out->append(reinterpret_cast<char*>(h), 8);
    out->append(content, pos, len);
    out->append(pad, '\0');
    pos += len;
  } while (pos < content.size());
}

void AppendLength(std::string* out, size_t n) {
  if (n < 128) {
    out->push_back(static_cast<char>(n));
  } else {
    out->push_back(static_cast<char>(0x80 | ((n >> 24) & 0x7f)));
    out->push_back(static_cast<char>(n >> 16));
    out->push_back(static_cast<char>(n >> 8));
    out->push_back(static_cast<char>(n));
  }
}

}  // namespace

std::string EncodeFcgiRequest(const std::map<std::string, std::string>& params, const std::string& body, int id) {
  std::string out;
  std::string begin = {0, 1, 0, 0, 0, 0, 0, 0};  // Role responder, no keep-conn.
  AppendRecord(&out, kBeginRequest, id, begin);
  std::string p;
  for (const auto& [k, v] : params) {
    AppendLength(&p, k.size());
    AppendLength(&p, v.size());
    p += k;
    p += v;
  }
  if (!p.empty()) AppendRecord(&out, kParams, id, p);
  AppendRecord(&out, kParams, id, "");
  if (!body.empty()) AppendRecord(&out, kStdin, id, body);
  AppendRecord(&out, kStdin, id, "");
  return out;
}

FcgiResponse FcgiRequest(int port, const std::string& method, const std::string& uri, const std::string& body,
                         std::map<std::string, std::string> params, int timeout_ms) {
  FcgiResponse resp;
  params.emplace("REQUEST_METHOD", method);
  params.emplace("REQUEST_URI", uri);
  params.emplace("CONTENT_LENGTH", std::to_string(body.size()));
  if (!body.empty()) params.emplace("CONTENT_TYPE", "application/json");
  // The stack's key unless the caller set (or, with "", removed) one.
  auto auth = params.find("HTTP_AUTHORIZATION");
  if (auth == params.end()) {
    if (std::string key = DefaultApiKey(); !key.empty()) params.emplace("HTTP_AUTHORIZATION", "Bearer " + key);
  } else if (auth->second.empty()) {
    params.erase(auth);
  }
  std::string wire = EncodeFcgiRequest(params, body);

  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    resp.error = std::string("connect: ") + std::strerror(errno);
    ::close(fd);
    return resp;
  }
  size_t sent = 0;
  while (sent < wire.size()) {
    ssize_t n = ::send(fd, wire.data() + sent, wire.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      resp.error = std::string("send: ") + std::strerror(errno);
      ::close(fd);
      return resp;
    }
    sent += static_cast<size_t>(n);
  }
  std::string in, stdout_data;
  bool ended = false;
  while (!ended) {
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, timeout_ms) <= 0) {
      resp.error = "timeout";
      break;
    }
    char buf[16384];
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) {
      resp.error = n == 0 ? "connection closed before END_REQUEST" : std::strerror(errno);
      break;
    }
    in.append(buf, static_cast<size_t>(n));
    while (in.size() >= 8) {
      auto* h = reinterpret_cast<const unsigned char*>(in.data());
      size_t len = (h[4] << 8) | h[5];
      size_t total = 8 + len + h[6];
      if (in.size() < total) break;
      if (h[1] == kStdout) stdout_data.append(in, 8, len);
      if (h[1] == kEndRequest) ended = true;
      in.erase(0, total);
    }
  }
  ::close(fd);
  if (!ended) return resp;
  size_t split = stdout_data.find("\r\n\r\n");
  if (split == std::string::npos) {
    resp.error = "no header/body separator";
    return resp;
  }
  resp.ok = true;
  resp.status = 200;
  size_t pos = 0;
  std::string head = stdout_data.substr(0, split);
  while (pos < head.size()) {
    size_t eol = head.find("\r\n", pos);
    if (eol == std::string::npos) eol = head.size();
    std::string line = head.substr(pos, eol - pos);
    pos = eol + 2;
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string value = line.substr(colon + 1);
    while (!value.empty() && value[0] == ' ') value.erase(0, 1);
    resp.headers[line.substr(0, colon)] = value;
  }
  if (resp.headers.count("Status")) resp.status = std::atoi(resp.headers["Status"].c_str());
  resp.body = stdout_data.substr(split + 4);
  return resp;
}

}  // namespace chatllm::testing
