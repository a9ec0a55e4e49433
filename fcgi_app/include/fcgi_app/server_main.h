#pragma once

namespace chatllm {

// The whole chatllm-fcgi program: parses the command line, loads the config,
// opens the listen socket and runs the prefork master until it is stopped.
// Returns the process exit status (2 for usage and config errors).
int RunServer(int argc, char** argv);

}  // namespace chatllm
