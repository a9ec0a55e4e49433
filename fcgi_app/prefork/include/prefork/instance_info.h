#pragma once

#include <string>
#include <vector>

#include "base/config.h"
#include "base/instance.h"
#include "prefork/application.h"
#include "prefork/scoreboard.h"

namespace chatllm {

// The instance-wide views served by any worker from the shared scoreboard:
// the process manager's status page (php-fpm's pm.status_path) and the
// Prometheus metrics. Cheap to construct; reads only shared memory and the
// listen socket.
class InstanceInfo : public InstanceReport {
 public:
  // `routes` names the handler's routes by number, for the metric labels.
  InstanceInfo(const Config& config, Scoreboard* board, int listen_fd, std::vector<RouteLabel> routes)
      : config_(config), board_(board), listen_fd_(listen_fd), routes_(std::move(routes)) {}

  // {"instance":..,"pool":"dynamic","start_time":..,"accepted_conn":..,
  //  "listen_queue":..,"max_listen_queue":..,"idle_workers":..,"active_workers":..,
  //  "total_workers":..,"max_children_reached":..,"slow_requests":..,...}
  // With `full`, also one entry per worker thread: pid, state, requests,
  // current request and how long it has run.
  std::string StatusJson(bool full) const override;
  // Prometheus text exposition format (version 0.0.4); see docs/metrics.md.
  std::string Metrics() const override;

 private:
  struct Listen {
    int queue = 0;  // Connections waiting to be accepted.
    int max = 0;    // The socket's backlog.
  };
  Listen ListenQueue() const;

  const Config& config_;
  Scoreboard* board_;
  int listen_fd_;
  std::vector<RouteLabel> routes_;
};

}  // namespace chatllm
