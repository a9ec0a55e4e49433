#pragma once

#include "base/config.h"
#include "prefork/application.h"
#include "prefork/process_manager.h"

namespace chatllm {

// The process manager settings of a configuration.
PoolOptions PoolOptionsOf(const Config& config);

// The whole chatllm-fcgi program around `app`: parses the command line,
// loads the config, opens the listen socket and runs the prefork master
// until it is stopped. Returns the process exit status (2 for usage and
// config errors).
int RunServer(int argc, char** argv, const Application& app);

}  // namespace chatllm
