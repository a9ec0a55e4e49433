// chatllm-fcgi-broken-lock: chatllm-fcgi with the session row lock dropped
// from appends (EnableUnsafeAppendForTesting). Test-only: the fault suite
// runs scenario 1 against it to show that chatllm-check catches lost writes.

#include "fcgi_app/server_main.h"
#include "fcgi_app/store.h"

int main(int argc, char** argv) {
  chatllm::EnableUnsafeAppendForTesting();
  return chatllm::RunServer(argc, argv);
}
