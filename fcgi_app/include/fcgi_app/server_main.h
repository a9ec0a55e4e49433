#pragma once

#include "fcgi_app/config.h"
#include "fcgi_app/process_manager.h"

namespace chatllm {

// The process manager settings of a configuration.
PoolOptions PoolOptionsOf(const Config& config);

// The whole chatllm-fcgi program: parses the command line, loads the config,
// opens the listen socket and runs the prefork master until it is stopped.
// Returns the process exit status (2 for usage and config errors).
int RunServer(int argc, char** argv);

}  // namespace chatllm
