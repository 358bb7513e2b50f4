#pragma once
// Certificates for TLS tests, made with the `openssl` command (argv only) in a private directory:
// a CA, a second CA that signed nothing the server shows, server certificates (valid, expired,
// for another name) and a client certificate, all signed by the first CA. EC P-256 keys: quick.
#include <filesystem>
#include <string>

#include "support/child_process.hpp"

namespace wk::test {

class TestCertificates {
 public:
  TestCertificates();  // throws std::runtime_error when openssl fails

  struct Pair {
    std::filesystem::path cert;
    std::filesystem::path key;
  };
  const std::filesystem::path& ca() const { return ca_.cert; }
  const std::filesystem::path& other_ca() const { return other_ca_.cert; }
  // For localhost and 127.0.0.1.
  const Pair& server() const { return server_; }
  // For localhost and 127.0.0.1, expired yesterday.
  const Pair& expired_server() const { return expired_server_; }
  // For elsewhere.test only.
  const Pair& other_name_server() const { return other_name_server_; }
  const Pair& client() const { return client_; }

 private:
  void openssl(const std::vector<std::string>& args) const;
  Pair make_ca(const std::string& name);
  Pair make_signed(const std::string& name, const std::string& subject, const std::string& alt_names,
                   int days);

  TempDir dir_;
  Pair ca_;
  Pair other_ca_;
  Pair server_;
  Pair expired_server_;
  Pair other_name_server_;
  Pair client_;
};

}  // namespace wk::test
