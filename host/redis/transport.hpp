#pragma once
// The bytes under a Connection: a TCP socket, optionally wrapped in TLS (OpenSSL). Internal to
// host/redis; hiredis is used only for its reply reader, so plain and TLS connections share one
// code path (docs/architecture.md, "Redis over TLS without hiredis's TLS").
//
// Blocking I/O with socket timeouts (SO_RCVTIMEO/SO_SNDTIMEO), as hiredis's synchronous API does.
// Failures return false and leave a text in error(); the caller adds the address and decides.
#include <openssl/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "posix/unique_fd.hpp"
#include "redis/redis.hpp"

namespace wk::redis {

// One SSL_CTX for every connection made with the same Settings: the CA, the client certificate
// and the verification rules, loaded once.
class TlsClient {
 public:
  explicit TlsClient(TlsOptions options);  // throws Error(Kind::setting)
  ~TlsClient();
  TlsClient(const TlsClient&) = delete;
  TlsClient& operator=(const TlsClient&) = delete;

  const TlsOptions& options() const noexcept { return options_; }
  SSL_CTX* context() const noexcept { return ctx_; }

 private:
  TlsOptions options_;
  SSL_CTX* ctx_ = nullptr;
};

class Transport {
 public:
  // Connects (each address of `host` in turn, within `timeout` each) and, with `tls`, shakes
  // hands and verifies the server. Throws Error: Kind::setting when the TLS settings are what
  // failed (the text names the variable), Kind::connection otherwise.
  Transport(const std::string& host, int port, std::chrono::milliseconds timeout, const TlsClient* tls);
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  bool set_timeout(std::chrono::milliseconds timeout);
  bool write_all(std::string_view bytes);
  // Reads what is there (at least one byte, blocking up to the timeout). 0 = failure or EOF.
  size_t read_some(char* buffer, size_t capacity);
  // Bytes TLS already decrypted: poll(2) on fd() would not report them.
  bool has_buffered() const;
  int fd() const noexcept { return fd_.get(); }
  const std::string& error() const noexcept { return error_; }
  // Whether the last failure is one a setting causes (a refused client certificate, a server
  // without TLS): Error::Kind::setting rather than an outage.
  bool setting_error() const noexcept { return setting_error_; }
  // The server asked for a client certificate and we have none (TLS callback).
  void note_certificate_request() noexcept { certificate_requested_ = true; }

 private:
  bool fail(std::string why);
  bool fail_tls(const char* during, int rc);

  struct SslFree {
    void operator()(SSL* ssl) const noexcept;
  };
  posix::UniqueFd fd_;
  std::unique_ptr<SSL, SslFree> ssl_;  // RAII: the constructor may throw after creating it
  std::string error_;
  bool setting_error_ = false;
  bool certificate_requested_ = false;
  bool answered_ = false;  // a byte came from the server after the handshake
};

}  // namespace wk::redis
