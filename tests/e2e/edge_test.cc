// The edge (issue 13): every error nginx answers itself, and the request
// checks the app makes before any route runs, sent through nginx and checked
// for status, JSON body and headers (docs/api.md, "Errors"). Requests nginx
// cannot parse go over a raw socket. Cases the stack's nginx cannot show
// (403 from outside the operators' networks, 408, 429, 502, 503, 504) run
// against two more nginx instances rendered by scripts/stack from the same
// templates with other settings, in front of the same app instances (or of
// none).

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <rapidjson/document.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/api_client.h"
#include "support/stack_env.h"

namespace chatllm::testing {
namespace {

// A response read off a raw socket until the server closed it.
struct RawResponse {
  std::string raw;                             // Every byte received.
  int status = 0;                              // 0: no status line.
  std::map<std::string, std::string> headers;  // Lowercased names; a repeated one keeps its last value.
  int header_count(const std::string& name) const { return counts.count(name) ? counts.at(name) : 0; }
  std::string Header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
  std::string body;
  std::map<std::string, int> counts;
};

// Sends `bytes` to 127.0.0.1:port and reads until the server closes the
// connection (requests ask for Connection: close; nginx closes after the
// errors it answers itself) or `timeout_s` passes. `done_sending`: shut our
// side down after sending (nginx then stops waiting for a body it refused).
RawResponse Raw(int port, const std::string& bytes, int timeout_s = 20, bool done_sending = false) {
  RawResponse r;
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_GE(fd, 0);
  timeval tv{timeout_s, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ADD_FAILURE() << "cannot connect to port " << port;
    ::close(fd);
    return r;
  }
  size_t sent = 0;
  while (sent < bytes.size()) {
    ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // nginx may answer and close before reading everything.
    sent += static_cast<size_t>(n);
  }
  if (done_sending) ::shutdown(fd, SHUT_WR);
  char buf[65536];
  while (true) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    r.raw.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  size_t head_end = r.raw.find("\r\n\r\n");
  if (r.raw.rfind("HTTP/1.", 0) != 0 || head_end == std::string::npos) return r;
  std::istringstream head(r.raw.substr(0, head_end));
  std::string line;
  std::getline(head, line);
  r.status = std::atoi(line.substr(9, 3).c_str());
  while (std::getline(head, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(' '));
    r.headers[name] = value;
    ++r.counts[name];
  }
  r.body = r.raw.substr(head_end + 4);
  return r;
}

std::string Get(const std::string& path, const std::string& extra_headers = "") {
  return "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + extra_headers + "\r\n";
}

std::string ErrorCode(const std::string& body) {
  rapidjson::Document d;
  d.Parse(body.c_str(), body.size());
  if (d.HasParseError() || !d.IsObject() || !d.HasMember("error") || !d["error"].IsObject())
    return "(not an error body)";
  const auto& e = d["error"];
  if (!e.HasMember("code") || !e["code"].IsString() || !e.HasMember("message") || !e["message"].IsString() ||
      e["message"].GetStringLength() == 0 || e.MemberCount() != 2 || d.MemberCount() != 1) {
    return "(not an error body)";
  }
  return e["code"].GetString();
}

bool ValidRequestId(const std::string& id) { return std::regex_match(id, std::regex("[A-Za-z0-9._-]{1,64}")); }

// An error nginx answered itself: docs/api.md's body and headers, and no
// sign of an app instance.
void ExpectNginxError(const RawResponse& r, int status, const std::string& code) {
  SCOPED_TRACE(r.raw.substr(0, 600));
  EXPECT_EQ(r.status, status);
  EXPECT_EQ(ErrorCode(r.body), code);
  EXPECT_EQ(r.Header("content-type"), "application/json");
  EXPECT_TRUE(ValidRequestId(r.Header("x-request-id"))) << r.Header("x-request-id");
  EXPECT_EQ(r.header_count("x-request-id"), 1);
  EXPECT_EQ(r.Header("cache-control"), "no-store");
  EXPECT_EQ(r.Header("x-content-type-options"), "nosniff");
  EXPECT_EQ(r.Header("x-frame-options"), "DENY");
  EXPECT_EQ(r.Header("referrer-policy"), "no-referrer");
  EXPECT_FALSE(r.Header("content-security-policy").empty());
  // Documented: no instance saw the request.
  EXPECT_EQ(r.header_count("x-served-by"), 0);
  EXPECT_EQ(r.header_count("x-shard-map-epoch"), 0);
}

int PortOf(const std::string& url) { return std::stoi(url.substr(url.rfind(':') + 1)); }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Waits (up to 20 s: nginx flushes its access log every second) until
// `path` holds a line containing every one of `parts`; returns that line.
std::string WaitForLogLine(const std::string& path, const std::vector<std::string>& parts) {
  for (int i = 0; i < 200; ++i) {
    std::istringstream lines(ReadFile(path));
    for (std::string line; std::getline(lines, line);) {
      bool all = true;
      for (const std::string& p : parts) all &= line.find(p) != std::string::npos;
      if (all) return line;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return "";
}

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// Another nginx, rendered by scripts/stack from conf/nginx/ with `settings`
// (CHATLLM_NGINX_* and CHATLLM_APPS), its state in var/<stack>/<name>/, on
// ports free when it starts (a port derived from the stack's could be the
// source port of some connection at that moment).
class OtherNginx {
 public:
  OtherNginx(const std::string& name, const std::string& settings) {
    const StackEnv& env = StackEnv::Get();
    var_ = env.var() + "/" + name;
    port_ = FreePort();
    prefix_ = "CHATLLM_VAR=" + var_ + " CHATLLM_NGINX_PORT=" + std::to_string(port_) +
              " CHATLLM_TLS_PORT=" + std::to_string(FreePort()) + " " + settings + " ";
    Run("start-nginx");
  }
  ~OtherNginx() { Run("stop-nginx"); }
  int port() const { return port_; }
  std::string access_log() const { return var_ + "/nginx/access.log"; }

 private:
  void Run(const std::string& command) {
    const StackEnv& env = StackEnv::Get();
    EXPECT_EQ(RunCommand(prefix_ + env.root() + "/scripts/stack --stack " + env.Value("CHATLLM_STACK") + " " + command +
                         " >/dev/null 2>&1"),
              0)
        << prefix_ << command;
  }
  std::string var_, prefix_;
  int port_ = 0;
};

class EdgeTest : public ::testing::Test {
 protected:
  const StackEnv& env = StackEnv::Get();
  int port = env.nginx_port();
  std::string key = env.api_key();
  std::string auth = "Authorization: Bearer " + env.api_key() + "\r\n";
};

// --- what the stack's own nginx answers itself ---------------------------------

TEST_F(EdgeTest, MalformedRequestLineIs400) {
  ExpectNginxError(Raw(port, "GARBAGE\r\n\r\n"), 400, "bad_request");
  ExpectNginxError(Raw(port, "GET /v1/sessions HTTP/1.1 extra\r\nHost: x\r\n\r\n"), 400, "bad_request");
}

TEST_F(EdgeTest, UnsupportedHttpVersionIs505) {
  ExpectNginxError(Raw(port, "GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n"), 505, "http_version_not_supported");
}

// Issue 13: a URI over nginx's buffer got nginx's HTML 500 ("empty URI in
// redirect to named location").
TEST_F(EdgeTest, OversizedUriIs414) {
  ExpectNginxError(Raw(port, Get("/v1/sessions/" + std::string(20000, 'a'))), 414, "uri_too_long");
}

// Issue 13: headers too large were answered 400.
TEST_F(EdgeTest, OversizedHeadersAre431) {
  RawResponse line = Raw(port, Get("/v1/sessions", "X-Big: " + std::string(20000, 'b') + "\r\n"));
  ExpectNginxError(line, 431, "headers_too_large");
  std::string many;
  for (int i = 0; i < 8; ++i) many += "X-Big-" + std::to_string(i) + ": " + std::string(10000, 'c') + "\r\n";
  ExpectNginxError(Raw(port, Get("/v1/sessions", many)), 431, "headers_too_large");
}

TEST_F(EdgeTest, PlainHttpOnTheTlsPortIs400) {
  ExpectNginxError(Raw(PortOf(env.Value("CHATLLM_TLS_URL")), Get("/healthz")), 400, "bad_request");
}

TEST_F(EdgeTest, OversizedBodyIs413) {
  const std::string head = "POST /v1/sessions HTTP/1.1\r\nHost: x\r\n" + auth +
                           "Content-Type: application/json\r\nContent-Length: 2097152\r\nConnection: close\r\n\r\n";
  ExpectNginxError(Raw(port, head + "{\"title\":\"", 20, true), 413, "payload_too_large");
}

TEST_F(EdgeTest, UnknownInstanceIs404) {
  ExpectNginxError(Raw(port, Get("/_instances/no-such-app/status")), 404, "not_found");
  // The operators' locations answer loopback (the default operators' network).
  EXPECT_EQ(Raw(port, Get("/_instances/" + env.apps()[0].first + "/status")).status, 200);
  EXPECT_EQ(Raw(port, Get("/status")).status, 200);
  EXPECT_EQ(Raw(port, Get("/metrics")).status, 200);
}

// A client's X-Request-Id comes back on nginx's own errors too.
TEST_F(EdgeTest, NginxErrorsCarryTheClientsRequestId) {
  RawResponse r = Raw(port, Get("/_instances/no-such-app/status", "X-Request-Id: edge-404.id_1\r\n"));
  ExpectNginxError(r, 404, "not_found");
  EXPECT_EQ(r.Header("x-request-id"), "edge-404.id_1");
}

// Issue 13: nginx logged a client's invalid X-Request-Id raw while the app
// replaced it, so the two logs did not correlate.
TEST_F(EdgeTest, AnInvalidRequestIdIsReplacedAlikeInBothLogs) {
  const std::string marker = "edge-invalid-" + std::to_string(::getpid()) + "-" +
                             std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  RawResponse r = Raw(port, Get("/v1/sessions?limit=1", auth + "X-Request-Id: " + marker + " <x>\r\n"));
  ASSERT_EQ(r.status, 200) << r.raw;
  const std::string id = r.Header("x-request-id");
  EXPECT_TRUE(std::regex_match(id, std::regex("[0-9a-f]{32}"))) << id;  // nginx's own $request_id.
  EXPECT_FALSE(r.Header("x-served-by").empty());
  const std::string nginx_line = WaitForLogLine(env.var() + "/nginx/access.log", {"id=" + id});
  EXPECT_NE(nginx_line, "") << "no nginx access log line with id=" << id;
  std::string app_logs;
  for (const auto& [name, app_port] : env.apps()) app_logs += ReadFile(env.var() + "/logs/" + name + ".access.log");
  EXPECT_NE(app_logs.find("\"request_id\":\"" + id + "\""), std::string::npos) << "the app logged another id";
  EXPECT_EQ(ReadFile(env.var() + "/nginx/access.log").find(marker), std::string::npos);
  EXPECT_EQ(app_logs.find(marker), std::string::npos);

  // A valid one is kept by both.
  const std::string valid = marker + "-ok";
  RawResponse ok = Raw(port, Get("/v1/sessions?limit=1", auth + "X-Request-Id: " + valid + "\r\n"));
  EXPECT_EQ(ok.Header("x-request-id"), valid);
  EXPECT_NE(WaitForLogLine(env.var() + "/nginx/access.log", {"id=" + valid}), "");
}

// --- what the app checks before any route runs ----------------------------------

TEST_F(EdgeTest, UnknownV1RouteWithoutKeyIs401) {
  for (const std::string& request :
       {Get("/v1/nothing"), Get("/v1"), Get("/v1/sessions/x/y/z"),
        std::string("PUT /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")}) {
    RawResponse r = Raw(port, request);
    SCOPED_TRACE(request);
    EXPECT_EQ(r.status, 401) << r.raw;
    EXPECT_EQ(ErrorCode(r.body), "unauthorized");
    EXPECT_EQ(r.Header("www-authenticate"), "Bearer realm=\"chatllm\"");
    EXPECT_EQ(r.Header("cache-control"), "no-store");
    EXPECT_FALSE(r.Header("x-request-id").empty());
  }
  // With a key, the route's own answer.
  RawResponse known = Raw(port, Get("/v1/nothing", auth));
  EXPECT_EQ(known.status, 404);
  EXPECT_EQ(ErrorCode(known.body), "not_found");
  RawResponse put =
      Raw(port, "PUT /v1/sessions HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 0\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(put.status, 405);
  EXPECT_EQ(ErrorCode(put.body), "method_not_allowed");
  // Outside /v1 nothing needs a key.
  EXPECT_EQ(Raw(port, Get("/healthz")).status, 200);
  EXPECT_EQ(ErrorCode(Raw(port, Get("/nothing")).body), "not_found");
}

// Issue 13: only the two list routes refused unknown query parameters.
TEST_F(EdgeTest, QueryParametersAreRefusedWhereARouteTakesNone) {
  ApiClient api(env.url(), key);
  const std::string id = api.CreateSession(R"({"title":"edge"})");
  ASSERT_FALSE(id.empty());
  auto expect_invalid = [](const ApiResponse& r, const std::string& what) {
    EXPECT_EQ(r.status, 400) << what << ": " << r.body;
    EXPECT_EQ(r.ErrorCode(), "invalid_request") << what;
    EXPECT_NE(r.body.find("unknown query parameter 'x'"), std::string::npos) << what << ": " << r.body;
  };
  expect_invalid(api.Post("/v1/sessions?x=1", R"({"title":"not stored"})"), "POST /v1/sessions");
  expect_invalid(api.Get("/v1/sessions/" + id + "?x=1"), "GET a session");
  expect_invalid(api.Delete("/v1/sessions/" + id + "?x"), "DELETE a session");
  expect_invalid(api.Post("/v1/sessions/" + id + "/messages?x=1", R"({"content":"not stored"})"), "POST a turn");
  expect_invalid(api.Post("/v1/chat/completions?x=1", R"({"model":"echo","messages":[{"role":"user","content":"x"}]})"),
                 "POST /v1/chat/completions");
  // Nothing was stored or deleted.
  ApiResponse s = api.Get("/v1/sessions/" + id);
  ASSERT_EQ(s.status, 200) << s.body;
  EXPECT_EQ(s["message_count"].GetInt64(), 0);
  EXPECT_EQ(api.Get("/v1/sessions/" + id + "?").status, 200);  // An empty query is no parameter.
  EXPECT_EQ(api.Delete("/v1/sessions/" + id).status, 204);
}

// Issue 13: with X-Session-Id, model was required although the session has one.
TEST_F(EdgeTest, ChatCompletionsWithASessionNeedNoModel) {
  ApiClient api(env.url(), key);
  const std::string id = api.CreateSession(R"({"model":"gpt-edge"})");
  ASSERT_FALSE(id.empty());
  const std::string turn = R"({"messages":[{"role":"user","content":"which model?"}]})";
  api.set_headers({{"X-Session-Id", id}});
  ApiResponse r = api.Post("/v1/chat/completions", turn);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_STREQ(r["model"].GetString(), "gpt-edge");  // The session's model (served by the fake provider).
  EXPECT_EQ(r["chatllm"]["user_seq"].GetInt64(), 1);
  api.set_headers({});
  ApiResponse in_body = api.Post("/v1/chat/completions",
                                 R"({"session_id":")" + id + R"(","messages":[{"role":"user","content":"again"}]})");
  ASSERT_EQ(in_body.status, 200) << in_body.body;
  EXPECT_STREQ(in_body["model"].GetString(), "gpt-edge");
  // Without a session there is no model to fall back on.
  ApiResponse none = api.Post("/v1/chat/completions", turn);
  EXPECT_EQ(none.status, 400) << none.body;
  EXPECT_EQ(none.ErrorCode(), "invalid_request");
  EXPECT_NE(none.body.find("field 'model' is required"), std::string::npos) << none.body;
  EXPECT_EQ(api.Delete("/v1/sessions/" + id).status, 204);
}

// Issue 13: a model nobody serves is refused (echo no longer answers it).
TEST_F(EdgeTest, AModelNoProviderServesIsRefused) {
  ApiClient api(env.url(), key);
  const std::string id = api.CreateSession();
  ASSERT_FALSE(id.empty());
  ApiResponse turn = api.Post("/v1/sessions/" + id + "/messages", R"({"content":"hi","model":"llama3.1"})");
  EXPECT_EQ(turn.status, 400) << turn.body;
  EXPECT_EQ(turn.ErrorCode(), "model_not_supported");
  ApiResponse create = api.Post("/v1/sessions", R"({"model":"llama3.1"})");
  EXPECT_EQ(create.ErrorCode(), "model_not_supported");
  ApiResponse chat =
      api.Post("/v1/chat/completions", R"({"model":"llama3.1","messages":[{"role":"user","content":"x"}]})");
  EXPECT_EQ(chat.status, 404) << chat.body;
  EXPECT_EQ(chat.ErrorCode(), "model_not_found");
  ApiResponse echo = api.Post("/v1/sessions/" + id + "/messages", R"({"content":"hi","model":"echo"})");
  EXPECT_EQ(echo.status, 201) << echo.body;
  EXPECT_EQ(api.Get("/v1/sessions/" + id)["message_count"].GetInt64(), 2);
  EXPECT_EQ(api.Delete("/v1/sessions/" + id).status, 204);
}

// A database error nobody expected (here: the users' lists renamed away on
// every shard) is a 500 whose body says nothing about SQL, shards or hosts.
TEST_F(EdgeTest, AnUnexpectedDatabaseErrorIs500WithoutInternals) {
  struct Restore {
    std::string command;
    ~Restore() { EXPECT_EQ(RunCommand(command), 0) << "restoring the table failed: " << command; }
  };
  std::vector<std::unique_ptr<Restore>> restore;
  for (const auto& shard : env.shards()) {
    const std::string sql =
        "mariadb --no-defaults --user=root --socket=" + env.var() + "/db/" + shard.first + "/mariadb.sock chatllm -e ";
    ASSERT_EQ(RunCommand(sql + "'RENAME TABLE session_list TO session_list_edge_test'"), 0);
    restore.push_back(std::make_unique<Restore>());
    restore.back()->command = sql + "'RENAME TABLE session_list_edge_test TO session_list'";
  }
  RawResponse r = Raw(port, Get("/v1/sessions?limit=1", auth));  // Reads the user's home.
  SCOPED_TRACE(r.raw);
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(ErrorCode(r.body), "internal_error");
  EXPECT_EQ(r.Header("cache-control"), "no-store");
  EXPECT_FALSE(r.Header("x-request-id").empty());
  for (const std::string& internal :
       {std::string("session_list"), std::string("SQL"), std::string("mysql"), std::string("127.0.0.1"),
        env.shards()[0].first + "\"", env.shards()[1].first + "\"", std::string("1146")}) {
    EXPECT_EQ(r.body.find(internal), std::string::npos) << internal;
  }
}

// --- another nginx, same apps: operators elsewhere, short timeouts, low rate ------

class EdgeNginxTest : public EdgeTest {
 protected:
  static void SetUpTestSuite() {
    nginx_ =
        new OtherNginx("edge-nginx", "CHATLLM_APPS='" + StackEnv::Get().Value("CHATLLM_APPS") +
                                         "' CHATLLM_NGINX_OPERATOR_NETWORKS=192.0.2.1 CHATLLM_NGINX_HEADER_TIMEOUT=1s"
                                         " CHATLLM_NGINX_READ_TIMEOUT=1s CHATLLM_NGINX_RATE_PER_KEY=1");
  }
  static void TearDownTestSuite() {
    delete nginx_;
    nginx_ = nullptr;
  }
  static OtherNginx* nginx_;
};
OtherNginx* EdgeNginxTest::nginx_ = nullptr;

TEST_F(EdgeNginxTest, OperatorsLocationsAre403Elsewhere) {
  for (const std::string& path : {std::string("/status"), std::string("/status?full"), std::string("/metrics"),
                                  "/_instances/" + env.apps()[0].first + "/metrics"}) {
    SCOPED_TRACE(path);
    ExpectNginxError(Raw(nginx_->port(), Get(path)), 403, "forbidden");
  }
  EXPECT_EQ(Raw(nginx_->port(), Get("/v1/sessions?limit=1", auth)).status, 200);  // The API is not affected.
}

// nginx cannot answer a client that stopped sending its request: it closes
// the connection and logs 408 (docs/api.md).
TEST_F(EdgeNginxTest, ASlowRequestHeadIsDisconnectedAndLogged408) {
  RawResponse r = Raw(nginx_->port(), "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: edge-slow-head\r\n");
  EXPECT_EQ(r.raw, "");
  EXPECT_NE(WaitForLogLine(nginx_->access_log(), {"\"GET /healthz HTTP/1.1\" 408 "}), "");
}

TEST_F(EdgeNginxTest, AnAppSlowerThanTheReadTimeoutIs504) {
  // The fake provider waits 3 s; nginx's read timeout here is 1 s, the
  // provider's own (test stack) 1.5 s.
  const std::string body = R"({"model":"gpt-slow-3000","messages":[{"role":"user","content":"x"}]})";
  RawResponse r =
      Raw(nginx_->port(), "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + auth +
                              "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                              "\r\nConnection: close\r\n\r\n" + body);
  ExpectNginxError(r, 504, "gateway_timeout");
}

TEST_F(EdgeNginxTest, TooManyRequestsPerKeyAre429) {
  // A key id of its own: 1 request/s, a burst of 2.
  const std::string fake = "Authorization: Bearer ck_0123456789abcdef_edge\r\n";
  RawResponse limited;
  for (int i = 0; i < 10 && limited.status != 429; ++i) limited = Raw(nginx_->port(), Get("/v1/sessions", fake));
  ExpectNginxError(limited, 429, "rate_limited");
  EXPECT_EQ(limited.Header("retry-after"), "1");
}

// --- another nginx, no reachable app, in maintenance -------------------------------

class EdgeDeadNginxTest : public EdgeTest {
 protected:
  static void SetUpTestSuite() {
    nginx_ = new OtherNginx("edge-nginx-dead",
                            "CHATLLM_APPS='ghost:" + std::to_string(FreePort()) + "' CHATLLM_NGINX_MAINTENANCE=1");
  }
  static void TearDownTestSuite() {
    delete nginx_;
    nginx_ = nullptr;
  }
  static OtherNginx* nginx_;
};
OtherNginx* EdgeDeadNginxTest::nginx_ = nullptr;

TEST_F(EdgeDeadNginxTest, NoAppInstanceIs502) {
  ExpectNginxError(Raw(nginx_->port(), Get("/healthz")), 502, "bad_gateway");
  ExpectNginxError(Raw(nginx_->port(), Get("/readyz")), 502, "bad_gateway");
}

TEST_F(EdgeDeadNginxTest, MaintenanceIs503) {
  RawResponse r = Raw(nginx_->port(), Get("/v1/sessions", auth));
  ExpectNginxError(r, 503, "service_unavailable");
  EXPECT_EQ(r.Header("retry-after"), "30");
  RawResponse post = Raw(nginx_->port(), "POST /v1/sessions HTTP/1.1\r\nHost: x\r\n" + auth +
                                             "Content-Length: 2\r\nConnection: close\r\n\r\n{}");
  ExpectNginxError(post, 503, "service_unavailable");
}

}  // namespace
}  // namespace chatllm::testing
