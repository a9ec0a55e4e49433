#pragma once

#include <cstdint>
#include <string_view>

namespace shard_router {

// The hash that places both ring points and keys on the ring. It is part of
// the on-disk contract: every process on every host must compute the same
// value for the same bytes, so it must never change once data is placed.
//
//   Hash64(s) = Mix64(Fnv1a64(s))
//
// Fnv1a64: FNV-1a over the bytes of s, offset basis 0xcbf29ce484222325,
//   prime 0x100000001b3, arithmetic modulo 2^64:
//     h = basis; for each byte b: h = (h XOR b) * prime
// Mix64: the 64-bit finalizer of MurmurHash3 (fmix64), which spreads FNV's
//   weak high bits so that keys differing only in their last byte land far
//   apart:
//     h ^= h >> 33; h *= 0xff51afd7ed558ccd; h ^= h >> 33;
//     h *= 0xc4ceb9fe1a85ec53; h ^= h >> 33
uint64_t Fnv1a64(std::string_view bytes);
uint64_t Mix64(uint64_t h);
inline uint64_t Hash64(std::string_view bytes) { return Mix64(Fnv1a64(bytes)); }

}  // namespace shard_router
