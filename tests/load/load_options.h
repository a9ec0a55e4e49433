#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace chatllm::load {

// Settings of one load run (chatllm-load --help documents each).
struct LoadOptions {
  std::string url = "http://127.0.0.1:8080";
  std::string api_key;              // Sent as "Authorization: Bearer"; default ApiKeyFromEnvironment().
  int clients = 16;                 // Concurrent connections (closed loop) or the pool size (open loop).
  double duration_s = 10;           // Stop after this long...
  int64_t requests = 0;             // ...or after this many requests, if > 0.
  double rate = 0;                  // > 0: open loop at this many requests/s in total.
  int sessions = 64;                // Sessions created up front and shared by all clients.
  std::string sessions_file;        // Use these existing session ids (one per line) instead.
  int read_limit = 50;              // Page size of the read op.
  bool session_per_client = false;  // Client i always uses session i mod N (no shared sessions).
  int content_bytes = 64;           // Size of each appended message.
  double warmup_s = 0;              // Requests in the first warmup_s seconds are not measured.
  std::map<std::string, double> mix = {{"append", 1}};  // Op -> weight.
  std::string raw_path = "/healthz";                    // Path of the "raw" op (GET, any status counts).
  std::string history_file;                             // Record every append and read here (for chatllm-check).
  std::string json_file;                                // Write the summary as JSON here.
  std::string label;                                    // Shown in the table header and the JSON.
  int timeout_s = 10;                                   // Per request; a timeout is an "unknown" outcome.
  int retries = 0;  // Retry a request whose outcome is unknown (no answer, 502, 503, 504,
                    // 409 in use) this often; only writes that carry a key are retried.
  // Realistic clients (docs/reliability.md): the share of writes that carry
  // an Idempotency-Key (< 0: all of them with --retries, else none), of
  // appends that send one of a few short texts every client sends ("yes"),
  // of keyed writes sent twice at once, of appends streamed and cut by the
  // client at a random point (then sent again when keyed), and the model
  // those streams ask for ("" = the session's).
  double keys = -1;
  double identical = 0;
  double twice = 0;
  double cut = 0;
  double resume = 0;  // Of the cut streams: resumed from their last event.
  double stream = 0;  // Appends streamed and read to the end (op append_stream, and ttft).
  int cut_min = 0;    // A cut stream is cut after cut_min..4 events.
  std::string stream_model;
  bool quiet = false;
  int report_every_s = 0;  // > 0: print a line with rate and p99 every N seconds.
};

// The API key a load tool uses when none is given: $CHATLLM_API_KEY, else
// the contents of $CHATLLM_API_KEY_FILE (the stack env file sets it), else
// the local stack's key (var/local/secrets/api_key in this source tree, if
// scripts/up made one), else "".
std::string ApiKeyFromEnvironment();

// Parses argv; on error or --help prints usage and returns false with *exit_code set.
bool ParseLoadOptions(int argc, char** argv, LoadOptions* out, int* exit_code);

}  // namespace chatllm::load
