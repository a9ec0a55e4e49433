// legacy_fcgi: the design chatllm replaced, rebuilt as a baseline for
// tests/load/bench. Each session's history is one JSON file on the app
// server's disk; every turn reads the whole file, parses it, appends two
// messages and rewrites the whole file, with no locking (two concurrent turns
// on one session race and one of them is lost, as in the original). It is the
// original at its best: files are replaced atomically (no torn reads). It
// speaks chatllm's API so chatllm-load and chatllm-check run against it.
//
//   legacy_fcgi PORT WORKERS DIR
//
// POST /v1/sessions?seed=N creates a session whose file already holds N
// messages (to measure long histories without writing them one by one).

#include <fcgiapp.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

namespace {

std::string g_dir;

std::string Param(FCGX_Request& r, const char* name) {
  const char* v = FCGX_GetParam(name, r.envp);
  return v ? v : "";
}

void Reply(FCGX_Request& r, int status, const std::string& body) {
  std::string out = "Status: " + std::to_string(status) + "\r\nContent-Type: application/json\r\n\r\n" + body;
  FCGX_PutStr(out.data(), static_cast<int>(out.size()), r.out);
}

std::string NewId() {
  static std::mt19937_64 rng(std::random_device{}() ^ static_cast<uint64_t>(getpid()));
  char buf[40];
  uint64_t a = rng(), b = rng();
  std::snprintf(buf, sizeof(buf), "%08x-%04x-4%03x-8%03x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>(a >> 16) & 0xffff, static_cast<unsigned>(a) & 0xfff,
                static_cast<unsigned>(b >> 48) & 0xfff, static_cast<unsigned long long>(b & 0xffffffffffffULL));
  return buf;
}

std::string Path(const std::string& id) { return g_dir + "/history_" + id + ".json"; }

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path);
  if (!in) return false;
  std::stringstream s;
  s << in.rdbuf();
  *out = s.str();
  return true;
}

// The whole file, every turn, with no lock and no fsync, as the original.
// Written to a temporary file and renamed over the old one, so a reader never
// sees half a file: the only anomaly left is the read-modify-write race of
// two turns on one session, the one the review describes (lost messages).
void WriteFile(const std::string& path, const std::string& data) {
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  std::ofstream(tmp, std::ios::trunc) << data;
  std::rename(tmp.c_str(), path.c_str());
}

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

void Message(Writer& w, int64_t seq, const char* role, const std::string& content, int64_t reply_to) {
  w.StartObject();
  w.Key("seq");
  w.Int64(seq);
  w.Key("role");
  w.String(role);
  w.Key("content");
  w.String(content.data(), static_cast<rapidjson::SizeType>(content.size()));
  w.Key("created_at");
  w.String("2026-01-01T00:00:00.000000Z");
  if (reply_to) {
    w.Key("reply_to");
    w.Int64(reply_to);
  }
  w.EndObject();
}

void Handle(FCGX_Request& r) {
  std::string method = Param(r, "REQUEST_METHOD"), uri = Param(r, "REQUEST_URI");
  std::string query;
  size_t q = uri.find('?');
  if (q != std::string::npos) {
    query = uri.substr(q + 1);
    uri.resize(q);
  }
  std::string body;
  long len = std::atol(Param(r, "CONTENT_LENGTH").c_str());
  body.resize(static_cast<size_t>(len));
  if (len > 0) FCGX_GetStr(body.data(), static_cast<int>(len), r.in);

  if (method == "POST" && uri == "/v1/sessions") {
    std::string id = NewId();
    int seed = query.rfind("seed=", 0) == 0 ? std::atoi(query.c_str() + 5) : 0;
    rapidjson::StringBuffer buf;
    Writer w(buf);
    w.StartArray();
    for (int i = 1; i <= seed; ++i)
      Message(w, i, i % 2 ? "user" : "assistant", "seeded message " + std::to_string(i), i % 2 ? 0 : i - 1);
    w.EndArray();
    WriteFile(Path(id), buf.GetString());
    Reply(r, 201, "{\"id\":\"" + id + "\"}");
    return;
  }
  const std::string prefix = "/v1/sessions/";
  if (uri.rfind(prefix, 0) != 0 || uri.size() < prefix.size() + 36 + 9)
    return Reply(r, 404, "{\"error\":{\"code\":\"not_found\",\"message\":\"no route\"}}");
  std::string id = uri.substr(prefix.size(), 36);
  std::string file;
  if (!ReadFile(Path(id), &file))
    return Reply(r, 404, "{\"error\":{\"code\":\"session_not_found\",\"message\":\"no session\"}}");
  rapidjson::Document history;  // The whole history, in memory, every request.
  history.Parse(file.c_str(), file.size());
  if (history.HasParseError() || !history.IsArray()) {
    // Read while another request was rewriting it (truncate, then write).
    return Reply(r, 500, "{\"error\":{\"code\":\"internal_error\",\"message\":\"history file unreadable\"}}");
  }

  if (method == "POST") {
    rapidjson::Document req;
    req.Parse(body.c_str(), body.size());
    if (!req.IsObject() || !req.HasMember("content") || !req["content"].IsString()) {
      return Reply(r, 400, "{\"error\":{\"code\":\"invalid_request\",\"message\":\"content\"}}");
    }
    std::string content(req["content"].GetString(), req["content"].GetStringLength());
    int64_t seq = static_cast<int64_t>(history.Size()) + 1;
    rapidjson::StringBuffer buf;
    Writer w(buf);
    w.StartArray();
    for (const auto& m : history.GetArray()) m.Accept(w);
    Message(w, seq, "user", content, 0);
    Message(w, seq + 1, "assistant", content, seq);
    w.EndArray();
    WriteFile(Path(id), std::string(buf.GetString(), buf.GetSize()));
    rapidjson::StringBuffer out;
    Writer o(out);
    o.StartObject();
    o.Key("user");
    Message(o, seq, "user", content, 0);
    o.Key("assistant");
    Message(o, seq + 1, "assistant", content, seq);
    o.EndObject();
    return Reply(r, 201, out.GetString());
  }
  // GET messages: limit/after paging over the parsed file.
  int limit = 50;
  int64_t after = 0;
  std::stringstream qs(query);
  std::string kv;
  while (std::getline(qs, kv, '&')) {
    if (kv.rfind("limit=", 0) == 0) limit = std::atoi(kv.c_str() + 6);
    if (kv.rfind("after=", 0) == 0) after = std::atoll(kv.c_str() + 6);
  }
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  w.Key("data");
  w.StartArray();
  int64_t n = 0, last = 0;
  bool more = false;
  for (const auto& m : history.GetArray()) {
    if (m["seq"].GetInt64() <= after) continue;
    if (n == limit) {
      more = true;
      break;
    }
    m.Accept(w);
    last = m["seq"].GetInt64();
    ++n;
  }
  w.EndArray();
  w.Key("has_more");
  w.Bool(more);
  w.Key("next_after");
  if (more)
    w.Int64(last);
  else
    w.Null();
  w.EndObject();
  Reply(r, 200, buf.GetString());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: legacy_fcgi PORT WORKERS DIR\n");
    return 2;
  }
  g_dir = argv[3];
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::atoi(argv[1])));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 1024) != 0) {
    std::perror("bind/listen");
    return 1;
  }
  pid_t master = getpid();
  for (int i = 0; i < std::atoi(argv[2]); ++i) {
    if (fork() == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != master) _exit(0);
      FCGX_Init();
      FCGX_Request req;
      FCGX_InitRequest(&req, fd, 0);
      while (FCGX_Accept_r(&req) >= 0) {
        Handle(req);
        FCGX_Finish_r(&req);
      }
      _exit(0);
    }
  }
  while (wait(nullptr) > 0) {
  }
  return 0;
}
