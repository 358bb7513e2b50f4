#include "redis/transport.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <array>
#include <cerrno>
#include <cstring>

namespace wk::redis {

namespace {

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

// The first error on this thread's OpenSSL queue, as text; the queue is emptied.
std::string openssl_error() {
  const unsigned long first = ERR_get_error();
  ERR_clear_error();
  if (first == 0) return "unknown TLS error";
  if (ERR_GET_LIB(first) == ERR_LIB_SYS) return std::strerror(ERR_GET_REASON(first));  // errno
  const char* reason = ERR_reason_error_string(first);
  if (reason != nullptr) return reason;
  std::array<char, 256> text{};
  ERR_error_string_n(first, text.data(), text.size());
  return text.data();
}

bool is_ip_address(const std::string& name) {
  in6_addr v6{};
  in_addr v4{};
  return inet_pton(AF_INET, name.c_str(), &v4) == 1 || inet_pton(AF_INET6, name.c_str(), &v6) == 1;
}

// SSL_write writes with write(2), which raises SIGPIPE on a socket the peer closed; the worker
// blocks SIGPIPE process-wide, but `worker enqueue` and the admin commands do not. Blocked for
// the write only, and a SIGPIPE the write raised is taken off the thread before the mask returns.
class SigpipeBlocked {
 public:
  SigpipeBlocked() {
    sigset_t pipe_only;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_only, &old_);
  }
  ~SigpipeBlocked() {
    if (!was_pending_) {
      sigset_t pipe_only;
      sigemptyset(&pipe_only);
      sigaddset(&pipe_only, SIGPIPE);
      const timespec now{};
      while (sigtimedwait(&pipe_only, nullptr, &now) > 0) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeBlocked(const SigpipeBlocked&) = delete;
  SigpipeBlocked& operator=(const SigpipeBlocked&) = delete;

 private:
  sigset_t old_{};
  bool was_pending_ = false;
};

// What a failed certificate check means, in the operator's words and with the setting to look at.
std::string verify_failure(long result, const TlsOptions& o, const std::string& peer_name) {
  const std::string ca = o.ca_file.empty() ? std::string("the system's trust store (REDIS_TLS_CA_FILE unset)")
                                           : "REDIS_TLS_CA_FILE=" + o.ca_file;
  switch (result) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
      return "the server's certificate has expired (checked against " + ca + ")";
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return "the server's certificate is not valid yet (check the clocks; checked against " + ca + ")";
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
      return "the server's certificate is not for \"" + peer_name +
             "\" (set REDIS_TLS_SERVER_NAME to the name the certificate carries)";
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
      return "the server's certificate is not signed by a trusted CA (" + ca +
             "; set REDIS_TLS_CA_FILE to the CA that signed it)";
    default:
      return std::string("the server's certificate was refused: ") + X509_verify_cert_error_string(result) +
             " (checked against " + ca + ")";
  }
}

// A TLS failure the server reported with an alert about our side of mutual TLS, or a server that
// does not speak TLS at all: settings to fix, not outages to wait out.
std::optional<std::string> setting_problem(unsigned long error) {
  if (ERR_GET_LIB(error) != ERR_LIB_SSL) return std::nullopt;
  switch (ERR_GET_REASON(error)) {
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
      return "the server requires a client certificate (set REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE)";
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
      return std::string("the server refused our client certificate (REDIS_TLS_CERT_FILE): ") +
             ERR_reason_error_string(error);
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
      return "the server does not speak TLS on this port (REDIS_TLS is on)";
    default:
      return std::nullopt;
  }
}

// Called when the server asks for a client certificate and none is configured: remembered, so
// that the server hanging up right after (TLS 1.3 refuses the missing certificate only after the
// client finished its handshake) reads as the setting it is. Sends none: a server for which a
// certificate is optional goes on.
int note_certificate_request(SSL* ssl, X509** /*cert*/, EVP_PKEY** /*key*/) {
  auto* transport = static_cast<Transport*>(SSL_get_ex_data(ssl, 0));
  if (transport != nullptr) transport->note_certificate_request();
  return 0;
}

}  // namespace

// ---- TlsClient ----------------------------------------------------------------------------------

TlsClient::TlsClient(TlsOptions options) : options_(std::move(options)) {
  ERR_clear_error();
  ctx_ = SSL_CTX_new(TLS_client_method());
  if (ctx_ == nullptr)
    throw Error(Error::Kind::setting, "REDIS_TLS: cannot create a TLS context: " + openssl_error());
  const auto fail = [this](const std::string& what) {
    const std::string why = openssl_error();
    SSL_CTX_free(ctx_);
    ctx_ = nullptr;
    throw Error(Error::Kind::setting, what + ": " + why);
  };
  SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx_, SSL_MODE_AUTO_RETRY);
  if (options_.insecure) {
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_NONE, nullptr);
  } else {
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    if (options_.ca_file.empty()) {
      if (SSL_CTX_set_default_verify_paths(ctx_) != 1)
        fail("REDIS_TLS: cannot load the system's trust store");
    } else if (SSL_CTX_load_verify_locations(ctx_, options_.ca_file.c_str(), nullptr) != 1) {
      fail("REDIS_TLS_CA_FILE=" + options_.ca_file + ": cannot be read as PEM certificates");
    }
  }
  if (options_.cert_file.empty()) SSL_CTX_set_client_cert_cb(ctx_, note_certificate_request);
  if (!options_.cert_file.empty()) {
    const std::string& key = options_.key_file.empty() ? options_.cert_file : options_.key_file;
    if (SSL_CTX_use_certificate_chain_file(ctx_, options_.cert_file.c_str()) != 1) {
      fail("REDIS_TLS_CERT_FILE=" + options_.cert_file + ": cannot be read as a PEM certificate");
    }
    if (SSL_CTX_use_PrivateKey_file(ctx_, key.c_str(), SSL_FILETYPE_PEM) != 1) {
      fail("REDIS_TLS_KEY_FILE=" + key +
           ": cannot be used as the PEM private key of REDIS_TLS_CERT_FILE=" + options_.cert_file);
    }
    if (SSL_CTX_check_private_key(ctx_) != 1) {
      fail("REDIS_TLS_KEY_FILE=" + key + ": does not match REDIS_TLS_CERT_FILE=" + options_.cert_file);
    }
  }
}

TlsClient::~TlsClient() {
  if (ctx_ != nullptr) SSL_CTX_free(ctx_);
}

std::shared_ptr<const TlsClient> make_tls_client(const TlsOptions& options) {
  return std::make_shared<const TlsClient>(options);
}

// ---- Transport ----------------------------------------------------------------------------------

Transport::Transport(const std::string& host, int port, std::chrono::milliseconds timeout,
                     const TlsClient* tls) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (const int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0) {
    throw Error(Error::Kind::connection, std::string("resolve: ") + gai_strerror(rc));
  }
  std::string why = "no address";
  for (const addrinfo* a = found; a != nullptr && !fd_.valid(); a = a->ai_next) {
    posix::UniqueFd fd(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol));
    if (!fd.valid()) {
      why = std::strerror(errno);
      continue;
    }
    int rc = ::connect(fd.get(), a->ai_addr, a->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{fd.get(), POLLOUT, 0};
      rc = ::poll(&p, 1, static_cast<int>(timeout.count()));
      if (rc == 0) {
        why = "connect timed out";
        continue;
      }
      int err = 0;
      socklen_t len = sizeof err;
      if (rc < 0 || ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      if (err != 0) {
        why = std::strerror(err);
        continue;
      }
    } else if (rc != 0) {
      why = std::strerror(errno);
      continue;
    }
    fd_ = std::move(fd);
  }
  freeaddrinfo(found);
  if (!fd_.valid()) throw Error(Error::Kind::connection, "connect: " + why);

  const int flags = ::fcntl(fd_.get(), F_GETFL);
  const int one = 1;
  if (flags < 0 || ::fcntl(fd_.get(), F_SETFL, flags & ~O_NONBLOCK) != 0 ||
      ::setsockopt(fd_.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 ||
      ::setsockopt(fd_.get(), SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) != 0 || !set_timeout(timeout)) {
    throw Error(Error::Kind::connection, std::string("socket options: ") + std::strerror(errno));
  }
  if (tls == nullptr) return;

  const TlsOptions& o = tls->options();
  const std::string peer_name = o.server_name.empty() ? host : o.server_name;
  ERR_clear_error();
  ssl_.reset(SSL_new(tls->context()));
  if (ssl_ == nullptr || SSL_set_fd(ssl_.get(), fd_.get()) != 1 ||
      SSL_set_ex_data(ssl_.get(), 0, this) != 1) {
    throw Error(Error::Kind::connection, "TLS: " + openssl_error());
  }
  if (!is_ip_address(peer_name)) {
    // SNI; SSL_set_tlsext_host_name is this call behind a macro with a C cast.
    SSL_ctrl(ssl_.get(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
             const_cast<char*>(peer_name.c_str()));
  }
  if (!o.insecure) {
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl_.get());
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    const int ok = is_ip_address(peer_name) ? X509_VERIFY_PARAM_set1_ip_asc(param, peer_name.c_str())
                                            : X509_VERIFY_PARAM_set1_host(param, peer_name.c_str(), 0);
    if (ok != 1) {
      throw Error(Error::Kind::setting, "REDIS_TLS_SERVER_NAME=\"" + peer_name + "\": not a usable name");
    }
  }
  const int rc = SSL_connect(ssl_.get());
  if (rc == 1) return;
  const long verified = SSL_get_verify_result(ssl_.get());
  if (!o.insecure && verified != X509_V_OK) {
    ERR_clear_error();
    throw Error(Error::Kind::setting, "TLS handshake: " + verify_failure(verified, o, peer_name));
  }
  fail_tls("TLS handshake", rc);
  // A plain Redis takes the hello for the start of an inline command and waits for the rest.
  if (error_.ends_with("timed out")) error_ += " (does the server speak TLS on this port? REDIS_TLS is on)";
  throw Error(setting_error_ ? Error::Kind::setting : Error::Kind::connection, error_);
}

Transport::~Transport() = default;

void Transport::SslFree::operator()(SSL* ssl) const noexcept { SSL_free(ssl); }

bool Transport::fail(std::string why) {
  if (certificate_requested_ && !answered_) {
    setting_error_ = true;
    error_ = why +
             ": the server asked for a client certificate and hung up without one (set "
             "REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE)";
    return false;
  }
  error_ = std::move(why);
  return false;
}

bool Transport::fail_tls(const char* during, int rc) {
  const int kind = SSL_get_error(ssl_.get(), rc);
  const int saved_errno = errno;
  const unsigned long first = ERR_peek_error();
  if (kind == SSL_ERROR_SSL && first != 0) {
    if (auto problem = setting_problem(first)) {
      ERR_clear_error();
      setting_error_ = true;
      return fail(std::string(during) + ": " + *problem);
    }
    return fail(std::string(during) + ": " + openssl_error());
  }
  ERR_clear_error();
  if (kind == SSL_ERROR_ZERO_RETURN || (kind == SSL_ERROR_SYSCALL && saved_errno == 0)) {
    return fail(std::string(during) + ": connection closed by the server");
  }
  if (kind == SSL_ERROR_WANT_READ || kind == SSL_ERROR_WANT_WRITE || saved_errno == EAGAIN) {
    return fail(std::string(during) + ": timed out");
  }
  return fail(std::string(during) + ": " + std::strerror(saved_errno));
}

bool Transport::set_timeout(std::chrono::milliseconds timeout) {
  const timeval tv = to_timeval(timeout);
  if (::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
      ::setsockopt(fd_.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) {
    return fail(std::string("set timeout: ") + std::strerror(errno));
  }
  return true;
}

bool Transport::write_all(std::string_view bytes) {
  if (ssl_ != nullptr) {
    const SigpipeBlocked quiet;
    while (!bytes.empty()) {
      ERR_clear_error();
      const int n =
          SSL_write(ssl_.get(), bytes.data(), static_cast<int>(std::min<size_t>(bytes.size(), 1U << 30U)));
      if (n <= 0) return fail_tls("write", n);
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(std::string("write: ") + (errno == EAGAIN ? "timed out" : std::strerror(errno)));
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

size_t Transport::read_some(char* buffer, size_t capacity) {
  if (ssl_ != nullptr) {
    ERR_clear_error();
    const int n = SSL_read(ssl_.get(), buffer, static_cast<int>(std::min<size_t>(capacity, 1U << 30U)));
    if (n > 0) {
      answered_ = true;
      return static_cast<size_t>(n);
    }
    fail_tls("read", n);
    return 0;
  }
  while (true) {
    const ssize_t n = ::recv(fd_.get(), buffer, capacity, 0);
    if (n > 0) return static_cast<size_t>(n);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) {
      fail("read: connection closed by the server");
    } else {
      fail(std::string("read: ") + (errno == EAGAIN ? "timed out" : std::strerror(errno)));
    }
    return 0;
  }
}

bool Transport::has_buffered() const { return ssl_ != nullptr && SSL_pending(ssl_.get()) > 0; }

}  // namespace wk::redis
