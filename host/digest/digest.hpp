#pragma once
// Hashes and hex: SHA-1 (Redis script ids), SHA-256 (plugin file identity), MD5 (asynq's unique
// keys), and bytes in lowercase hex.
//
// Backed by nettle, not OpenSSL: OpenSSL 3 routes every digest, even its one-shot SHA1(), through
// its provider machinery, whose first use costs about 2 MB of resident memory in each process
// (docs/queue-engine.md, "Memory"). nettle's hashes are plain functions over a caller's context.

#include <memory>
#include <string>
#include <string_view>

struct sha256_ctx;  // nettle's

namespace wk::digest {

// `bytes` as lowercase hex, two digits per byte.
std::string hex(std::string_view bytes);

std::string sha1_hex(std::string_view bytes);
std::string md5_hex(std::string_view bytes);

// A SHA-256 fed chunk by chunk, for files too large to hold in memory at once.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(std::string_view bytes);
  // The digest of everything fed so far, in hex. Call once.
  std::string hex();

 private:
  std::unique_ptr<sha256_ctx> ctx_;
};

}  // namespace wk::digest
