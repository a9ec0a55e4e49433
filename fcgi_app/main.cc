// chatllm-fcgi: the prefork FastCGI server (master + workers).
//
//   chatllm-fcgi --config FILE            run in the foreground
//   chatllm-fcgi --config FILE --check    validate the config and exit

#include "fcgi_app/server_main.h"

int main(int argc, char** argv) { return chatllm::RunServer(argc, argv); }
