#include "fcgi_app/provider.h"

#include <chrono>
#include <thread>

namespace chatllm {

Completion EchoProvider::Complete(const std::vector<ChatMessage>& context) {
  if (delay_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms_));
  if (context.empty()) throw ProviderError(500, "internal_error", "echo: empty context");
  return Completion{context.back().content};
}

std::unique_ptr<Provider> MakeProvider(const Config& config) {
  if (config.provider == "echo") return std::make_unique<EchoProvider>(config.echo_delay_ms);
  throw ConfigError(config.path + ": [provider] name: unknown provider '" + config.provider + "'");
}

}  // namespace chatllm
