#pragma once

#include <string>

#include "fcgi_app/config.h"
#include "fcgi_app/scoreboard.h"

namespace chatllm {

// The instance-wide views served by any worker from the shared scoreboard:
// the process manager's status page (php-fpm's pm.status_path) and the
// Prometheus metrics. Cheap to construct; reads only shared memory and the
// listen socket.
class InstanceInfo {
 public:
  InstanceInfo(const Config& config, Scoreboard* board, int listen_fd)
      : config_(config), board_(board), listen_fd_(listen_fd) {}

  // {"instance":..,"pool":"dynamic","start_time":..,"accepted_conn":..,
  //  "listen_queue":..,"max_listen_queue":..,"idle_workers":..,"active_workers":..,
  //  "total_workers":..,"max_children_reached":..,"slow_requests":..,...}
  // With `full`, also one entry per worker thread: pid, state, requests,
  // current request and how long it has run.
  std::string StatusJson(bool full) const;
  // Prometheus text exposition format (version 0.0.4); see docs/metrics.md.
  std::string Metrics() const;

 private:
  struct Listen {
    int queue = 0;  // Connections waiting to be accepted.
    int max = 0;    // The socket's backlog.
  };
  Listen ListenQueue() const;

  const Config& config_;
  Scoreboard* board_;
  int listen_fd_;
};

}  // namespace chatllm
