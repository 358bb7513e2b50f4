// redis::Connection and redis::Subscription over TLS against a private redis-server with
// certificates made by openssl: what works, and the start-up errors that name the setting.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "redis/redis.hpp"
#include "support/private_redis.hpp"
#include "support/test_certs.hpp"
#include "support/test_env.hpp"

namespace wk::test {
namespace {

class RedisTls : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { certs_ = std::make_unique<TestCertificates>(); }
  static void TearDownTestSuite() { certs_.reset(); }

  // A TLS-only server showing `shown`, reached through a client that verifies nothing (so
  // that the PING awaiting the start succeeds whatever the certificate).
  static std::unique_ptr<PrivateRedis> server(const TestCertificates::Pair& shown,
                                              bool require_client_cert = false) {
    PrivateRedis::Options o;
    o.tls = PrivateRedis::Options::Tls{shown.cert, shown.key, certs_->ca(), require_client_cert};
    redis::TlsOptions insecure;
    insecure.insecure = true;
    if (require_client_cert) {
      insecure.cert_file = certs_->client().cert.string();
      insecure.key_file = certs_->client().key.string();
    }
    o.client_tls = redis::make_tls_client(insecure);
    return std::make_unique<PrivateRedis>(o);
  }

  static redis::Settings settings_for(const PrivateRedis& server, const redis::TlsOptions& tls) {
    redis::Settings s = server.settings();
    s.tls = redis::make_tls_client(tls);
    return s;
  }

  static redis::TlsOptions verified() {
    redis::TlsOptions t;
    t.ca_file = certs_->ca().string();
    return t;
  }

  // The error a connection with `settings` fails with (the test fails if it connects).
  static redis::Error connect_error(const redis::Settings& settings) {
    try {
      redis::Connection c(settings);
      c.command({"PING"});
    } catch (const redis::Error& e) {
      return e;
    }
    ADD_FAILURE() << "connected";
    return redis::Error(redis::Error::Kind::reply, "connected");
  }

  static inline std::unique_ptr<TestCertificates> certs_;
};

TEST_F(RedisTls, AVerifiedServerAnswersCommandsScriptsPipelinesAndLargeValues) {
  auto srv = server(certs_->server());
  redis::Connection c(settings_for(*srv, verified()));
  EXPECT_EQ(c.command({"PING"}).str(), "PONG");
  // Larger than a TLS record and than the reader's buffer: the reply arrives in many reads.
  const std::string big(3 * 1024 * 1024 + 7, 'x');
  c.command({"SET", "big", big});
  EXPECT_EQ(c.command({"GET", "big"}).str(), big);
  for (int i = 0; i < 1000; ++i) c.append({"INCR", "n"});
  for (int i = 1; i <= 1000; ++i) EXPECT_EQ(c.read_reply().integer(), i);
  const redis::Script script("return redis.call('INCRBY', KEYS[1], ARGV[1])");
  const std::vector<std::string_view> args{"n", "5"};
  EXPECT_EQ(c.eval(script, args, 1).integer(), 1005);
}

TEST_F(RedisTls, ASubscriptionOverTlsReceivesEveryMessage) {
  auto srv = server(certs_->server());
  const redis::Settings s = settings_for(*srv, verified());
  redis::Subscription sub(s, "news");
  // The first call subscribes; nothing is published yet.
  EXPECT_FALSE(sub.next(std::chrono::milliseconds(50)).has_value());
  redis::Connection pub(s);
  // Many small messages in one write arrive in a few TLS records: what TLS decrypted but poll(2)
  // cannot see must be read too.
  constexpr int kMessages = 200;
  for (int i = 0; i < kMessages; ++i) pub.append({"PUBLISH", "news", "m" + std::to_string(i)});
  for (int i = 0; i < kMessages; ++i) EXPECT_EQ(pub.read_reply().integer(), 1);
  for (int i = 0; i < kMessages; ++i) {
    const auto message = sub.next(std::chrono::seconds(5));
    ASSERT_TRUE(message.has_value()) << "message " << i;
    EXPECT_EQ(*message, "m" + std::to_string(i));
  }
}

TEST_F(RedisTls, MutualTlsConnectsWithAClientCertificateAndNamesTheSettingWithout) {
  auto srv = server(certs_->server(), /*require_client_cert=*/true);
  redis::TlsOptions with_cert = verified();
  with_cert.cert_file = certs_->client().cert.string();
  with_cert.key_file = certs_->client().key.string();
  redis::Connection c(settings_for(*srv, with_cert));
  EXPECT_EQ(c.command({"PING"}).str(), "PONG");

  const redis::Error e = connect_error(settings_for(*srv, verified()));
  EXPECT_TRUE(e.is_setting()) << e.what();
  EXPECT_NE(std::string(e.what()).find("REDIS_TLS_CERT_FILE"), std::string::npos) << e.what();
}

TEST_F(RedisTls, AServerSignedByAnotherCaIsRefusedNamingTheCaFile) {
  auto srv = server(certs_->server());
  redis::TlsOptions wrong_ca;
  wrong_ca.ca_file = certs_->other_ca().string();
  const redis::Error e = connect_error(settings_for(*srv, wrong_ca));
  EXPECT_TRUE(e.is_setting()) << e.what();
  EXPECT_NE(std::string(e.what()).find("REDIS_TLS_CA_FILE"), std::string::npos) << e.what();
}

TEST_F(RedisTls, AnExpiredServerCertificateIsRefused) {
  auto srv = server(certs_->expired_server());
  const redis::Error e = connect_error(settings_for(*srv, verified()));
  EXPECT_TRUE(e.is_setting()) << e.what();
  EXPECT_NE(std::string(e.what()).find("expired"), std::string::npos) << e.what();
}

TEST_F(RedisTls, ACertificateForAnotherNameIsRefusedNamingTheServerNameSetting) {
  auto srv = server(certs_->other_name_server());
  const redis::Error e = connect_error(settings_for(*srv, verified()));
  EXPECT_TRUE(e.is_setting()) << e.what();
  EXPECT_NE(std::string(e.what()).find("REDIS_TLS_SERVER_NAME"), std::string::npos) << e.what();

  redis::TlsOptions named = verified();
  named.server_name = "elsewhere.test";
  redis::Connection c(settings_for(*srv, named));
  EXPECT_EQ(c.command({"PING"}).str(), "PONG");
}

TEST_F(RedisTls, InsecureSkipsVerification) {
  auto srv = server(certs_->expired_server());
  redis::TlsOptions insecure;
  insecure.ca_file = certs_->other_ca().string();  // ignored
  insecure.insecure = true;
  redis::Connection c(settings_for(*srv, insecure));
  EXPECT_EQ(c.command({"PING"}).str(), "PONG");
}

// A plain Redis takes the TLS hello for the start of an inline command and waits for its end:
// the handshake times out, and the error says what to check.
TEST_F(RedisTls, TlsToAPlainServerTimesOutWithAHint) {
  PrivateRedis plain;
  const redis::Error e = connect_error(settings_for(plain, verified()));
  EXPECT_TRUE(e.is_connection()) << e.what();
  EXPECT_NE(std::string(e.what()).find("does the server speak TLS"), std::string::npos) << e.what();
}

TEST_F(RedisTls, UnusableFilesAreRefusedWhenLoadedNamingTheVariable) {
  const auto error_of = [](const redis::TlsOptions& o) -> std::string {
    try {
      redis::make_tls_client(o);
    } catch (const redis::Error& e) {
      EXPECT_TRUE(e.is_setting()) << e.what();
      return e.what();
    }
    ADD_FAILURE() << "loaded";
    return {};
  };
  redis::TlsOptions missing_ca;
  missing_ca.ca_file = "/nonexistent/ca.pem";
  EXPECT_NE(error_of(missing_ca).find("REDIS_TLS_CA_FILE=/nonexistent/ca.pem"), std::string::npos);

  redis::TlsOptions wrong_key = verified();
  wrong_key.cert_file = certs_->client().cert.string();
  wrong_key.key_file = certs_->server().key.string();
  EXPECT_NE(error_of(wrong_key).find("REDIS_TLS_KEY_FILE=" + certs_->server().key.string()),
            std::string::npos);

  redis::TlsOptions key_as_cert = verified();
  key_as_cert.cert_file = certs_->client().key.string();
  EXPECT_NE(error_of(key_as_cert).find("REDIS_TLS_CERT_FILE"), std::string::npos);
}

}  // namespace
}  // namespace wk::test
