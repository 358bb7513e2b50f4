#include "digest/digest.hpp"

#include <gtest/gtest.h>

#include <string>

namespace wk::digest {
namespace {

// Reference values: FIPS 180-4's examples for SHA-1 and SHA-256, RFC 1321's test suite for MD5.
TEST(Digest, Sha1MatchesTheStandardsExamples) {
  EXPECT_EQ(sha1_hex("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
  EXPECT_EQ(sha1_hex(""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
}

TEST(Digest, Md5MatchesRfc1321) {
  EXPECT_EQ(md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
  EXPECT_EQ(md5_hex("abc"), "900150983cd24fb0d6963f7d28e17f72");
  EXPECT_EQ(md5_hex("12345678901234567890123456789012345678901234567890123456789012345678901234567890"),
            "57edf4a22be3c955ac49da2e2107b67a");
}

TEST(Digest, Sha256MatchesTheStandardsExamples) {
  Sha256 abc;
  abc.update("abc");
  EXPECT_EQ(abc.hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Sha256 two_blocks;
  two_blocks.update("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq");
  EXPECT_EQ(two_blocks.hex(), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

// The loader feeds files in 64 KiB chunks: chunk boundaries must not change the digest.
TEST(Digest, Sha256FedInChunksEqualsOneUpdate) {
  std::string data;
  for (int i = 0; i < 200'000; ++i) data.push_back(static_cast<char>(i * 31 + 7));
  Sha256 whole;
  whole.update(data);
  Sha256 chunked;
  for (size_t at = 0; at < data.size(); at += 4093) chunked.update(std::string_view(data).substr(at, 4093));
  EXPECT_EQ(chunked.hex(), whole.hex());
  Sha256 million_a;
  for (int i = 0; i < 1000; ++i) million_a.update(std::string(1000, 'a'));
  EXPECT_EQ(million_a.hex(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Digest, HexIsLowercaseTwoDigitsPerByte) {
  EXPECT_EQ(hex(std::string("\x00\x0f\xa5\xff", 4)), "000fa5ff");
  EXPECT_EQ(hex(""), "");
}

}  // namespace
}  // namespace wk::digest
