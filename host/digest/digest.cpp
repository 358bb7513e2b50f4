#include "digest/digest.hpp"

#include <nettle/md5.h>
#include <nettle/sha1.h>
#include <nettle/sha2.h>

#include <array>

namespace wk::digest {
namespace {

const unsigned char* data_of(std::string_view bytes) {
  return reinterpret_cast<const unsigned char*>(bytes.data());
}

std::string_view view_of(const unsigned char* bytes, size_t size) {
  return {reinterpret_cast<const char*>(bytes), size};
}

}  // namespace

std::string hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const unsigned char b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0xF]);
  }
  return out;
}

std::string sha1_hex(std::string_view bytes) {
  sha1_ctx ctx{};
  sha1_init(&ctx);
  sha1_update(&ctx, bytes.size(), data_of(bytes));
  std::array<unsigned char, SHA1_DIGEST_SIZE> out{};
  sha1_digest(&ctx, out.size(), out.data());
  return hex(view_of(out.data(), out.size()));
}

std::string md5_hex(std::string_view bytes) {
  md5_ctx ctx{};
  md5_init(&ctx);
  md5_update(&ctx, bytes.size(), data_of(bytes));
  std::array<unsigned char, MD5_DIGEST_SIZE> out{};
  md5_digest(&ctx, out.size(), out.data());
  return hex(view_of(out.data(), out.size()));
}

Sha256::Sha256() : ctx_(std::make_unique<sha256_ctx>()) { sha256_init(ctx_.get()); }
Sha256::~Sha256() = default;

void Sha256::update(std::string_view bytes) { sha256_update(ctx_.get(), bytes.size(), data_of(bytes)); }

std::string Sha256::hex() {
  std::array<unsigned char, SHA256_DIGEST_SIZE> out{};
  sha256_digest(ctx_.get(), out.size(), out.data());
  return wk::digest::hex(view_of(out.data(), out.size()));
}

}  // namespace wk::digest
