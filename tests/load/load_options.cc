#include "load/load_options.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace chatllm::load {

std::string ApiKeyFromEnvironment() {
  if (const char* k = std::getenv("CHATLLM_API_KEY"); k != nullptr && *k != '\0') return k;
  const char* file = std::getenv("CHATLLM_API_KEY_FILE");
  // CHATLLM_SOURCE_DIR: compiled in (tests/CMakeLists.txt).
  const std::string path = file != nullptr && *file != '\0' ? file : CHATLLM_SOURCE_DIR "/var/local/secrets/api_key";
  std::ifstream in(path);
  std::string key;
  in >> key;
  return key;
}

namespace {

constexpr const char* kUsage = R"(usage: chatllm-load [options]

Drives the chatllm API through nginx and prints throughput, latency
percentiles and errors by status, per operation.

  --url URL              base URL (default http://127.0.0.1:8080)
  --api-key KEY          API key (default $CHATLLM_API_KEY, else the contents of
                         $CHATLLM_API_KEY_FILE, which the stack env file sets)
  --clients N            concurrent clients, each with one keep-alive
                         connection (default 16)
  --duration S           run for S seconds (default 10)
  --requests N           stop after N requests instead
  --rate R               open loop: start R requests/s in total, whatever the
                         latency; a request's latency runs from its scheduled
                         start, so queueing is measured (no coordinated
                         omission). --clients bounds the concurrency.
  --sessions N           sessions created before the run and shared by all
                         clients (default 64); 1 = every client on one session
  --sessions-file FILE   use the existing sessions listed in FILE (one id per line)
  --session-per-client   client i cycles through sessions i, i+clients, i+2*clients...
                         instead of random ones: no two clients share a session
  --mix OP=W,...         weights of operations (default append=1):
                           create  POST /v1/sessions
                           append  POST /v1/sessions/{id}/messages (a turn)
                           get     GET  /v1/sessions/{id}
                           read    GET  /v1/sessions/{id}/messages?limit=--read-limit
                           list    GET  /v1/sessions/{id}/messages?limit=50&after=random
                           raw     GET  --raw-path (for ceilings: any status counts as ok)
  --raw-path PATH        path of the raw op (default /healthz)
  --read-limit N         page size of the read op (default 50)
  --content-bytes N      size of each appended message (default 64)
  --warmup S             do not measure the first S seconds
  --timeout S            per-request timeout (default 10)
  --retries N            retry a keyed write whose outcome is unknown (no answer,
                         a 502, 503 or 504, 409 idempotency_key_in_use) up to N
                         times with the same key, as a careful client does (default 0)

Realistic clients (each a share from 0 to 1 of the requests concerned):
  --keys F               writes (creates, appends) that carry an Idempotency-Key
                         (default: all with --retries, else none)
  --identical F          appends that send one of a few short texts every client
                         sends ("yes", "ok", ...): only their seq tells them apart
  --twice F              keyed writes sent twice at once on two connections
  --cut F                appends sent with "stream": true and cut by the client
                         after a random number of events; a keyed one is then
                         sent again with its key and read to the end
  --resume F             of those cut streams, this share is then read again
                         from the last event the client saw (the durable turn's
                         events URL) to the end, before any resend; the checker
                         proves the text assembled is the stored answer
  --cut-min N            a cut stream is cut after N..4 of its events (default 0:
                         some before any, which cannot be resumed)
  --stream F             appends sent with "stream": true and read to the end:
                         reported as op append_stream, and their time to the
                         first piece of text as op ttft
  --stream-model M       the model those streams ask for (a slow one cuts mid-answer)
  The mix may also hold:
                           delete    DELETE /v1/sessions/{id} (a random shared session,
                                     while others still append to it; never below half
                                     of --sessions)
                           recreate  POST /v1/sessions again with the key and body of an
                                     earlier keyed create (must be replayed)
                           sessions  GET /v1/sessions?limit=100 (the newest page)
  Every append attempt carries its own X-Request-Id (the checker matches the
  messages stored to the requests that wrote them), and one get or read in 20
  goes to a session this run deleted (it must stay gone).
  --history FILE         record every append and read (JSON lines) for chatllm-check
  --json FILE            write the summary as JSON
  --label TEXT           name of this run in the table and JSON
  --report-every S       print rate and p99 every S seconds
  --quiet                print only the summary table

SIGINT or SIGTERM ends the run early; the summary is printed as usual.
)";

bool ParseMix(const std::string& text, std::map<std::string, double>* mix) {
  mix->clear();
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    size_t eq = item.find('=');
    std::string op = item.substr(0, eq);
    double w = eq == std::string::npos ? 1 : std::atof(item.c_str() + eq + 1);
    if (op != "create" && op != "append" && op != "get" && op != "read" && op != "list" && op != "raw" &&
        op != "delete" && op != "recreate" && op != "sessions") {
      return false;
    }
    if (w > 0) (*mix)[op] = w;
  }
  return !mix->empty();
}

}  // namespace

bool ParseLoadOptions(int argc, char** argv, LoadOptions* o, int* exit_code) {
  o->api_key = ApiKeyFromEnvironment();
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "chatllm-load: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      *exit_code = 0;
      return false;
    } else if (a == "--url")
      o->url = next();
    else if (a == "--api-key")
      o->api_key = next();
    else if (a == "--clients")
      o->clients = std::atoi(next().c_str());
    else if (a == "--duration")
      o->duration_s = std::atof(next().c_str());
    else if (a == "--requests")
      o->requests = std::atoll(next().c_str());
    else if (a == "--rate")
      o->rate = std::atof(next().c_str());
    else if (a == "--sessions")
      o->sessions = std::atoi(next().c_str());
    else if (a == "--sessions-file")
      o->sessions_file = next();
    else if (a == "--read-limit")
      o->read_limit = std::atoi(next().c_str());
    else if (a == "--content-bytes")
      o->content_bytes = std::atoi(next().c_str());
    else if (a == "--warmup")
      o->warmup_s = std::atof(next().c_str());
    else if (a == "--timeout")
      o->timeout_s = std::atoi(next().c_str());
    else if (a == "--retries")
      o->retries = std::atoi(next().c_str());
    else if (a == "--keys")
      o->keys = std::atof(next().c_str());
    else if (a == "--identical")
      o->identical = std::atof(next().c_str());
    else if (a == "--twice")
      o->twice = std::atof(next().c_str());
    else if (a == "--cut")
      o->cut = std::atof(next().c_str());
    else if (a == "--resume")
      o->resume = std::atof(next().c_str());
    else if (a == "--stream")
      o->stream = std::atof(next().c_str());
    else if (a == "--cut-min")
      o->cut_min = std::clamp(std::atoi(next().c_str()), 0, 4);
    else if (a == "--stream-model")
      o->stream_model = next();
    else if (a == "--raw-path")
      o->raw_path = next();
    else if (a == "--history")
      o->history_file = next();
    else if (a == "--json")
      o->json_file = next();
    else if (a == "--label")
      o->label = next();
    else if (a == "--report-every")
      o->report_every_s = std::atoi(next().c_str());
    else if (a == "--quiet")
      o->quiet = true;
    else if (a == "--session-per-client")
      o->session_per_client = true;
    else if (a == "--mix") {
      std::string m = next();
      if (!ParseMix(m, &o->mix)) {
        std::fprintf(stderr, "chatllm-load: bad --mix '%s'\n", m.c_str());
        *exit_code = 2;
        return false;
      }
    } else {
      std::fprintf(stderr, "chatllm-load: unknown option '%s'\n\n%s", a.c_str(), kUsage);
      *exit_code = 2;
      return false;
    }
  }
  if (o->keys < 0) o->keys = o->retries > 0 ? 1 : 0;
  for (double share : {o->keys, o->identical, o->twice, o->cut, o->resume, o->stream}) {
    if (share < 0 || share > 1) {
      std::fprintf(
          stderr,
          "chatllm-load: --keys, --identical, --twice, --cut, --resume and --stream take a share from 0 to 1\n");
      *exit_code = 2;
      return false;
    }
  }
  if (o->clients < 1 || o->sessions < 1 || o->content_bytes < 16 || (o->duration_s <= 0 && o->requests <= 0)) {
    std::fprintf(
        stderr,
        "chatllm-load: need --clients >= 1, --sessions >= 1, --content-bytes >= 16 and a duration or request count\n");
    *exit_code = 2;
    return false;
  }
  return true;
}

}  // namespace chatllm::load
