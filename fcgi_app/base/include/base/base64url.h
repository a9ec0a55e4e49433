#pragma once

#include <string>
#include <string_view>

namespace chatllm {

// Unpadded base64url (RFC 4648, section 5), for API keys and list cursors.
std::string Base64UrlEncode(std::string_view bytes);
// Decodes `text` into *out. False for a character outside the alphabet, an
// impossible length, or unused trailing bits that are not zero: every byte
// string has exactly one accepted spelling.
bool Base64UrlDecode(std::string_view text, std::string* out);

}  // namespace chatllm
