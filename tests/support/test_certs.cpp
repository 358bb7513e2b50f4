#include "support/test_certs.hpp"

#include <fstream>
#include <stdexcept>

namespace wk::test {

TestCertificates::TestCertificates() : dir_("wk-certs") {
  ca_ = make_ca("ca");
  other_ca_ = make_ca("other-ca");
  server_ = make_signed("server", "/CN=localhost", "DNS:localhost,IP:127.0.0.1", 30);
  expired_server_ = make_signed("expired", "/CN=localhost", "DNS:localhost,IP:127.0.0.1", -1);
  other_name_server_ = make_signed("other-name", "/CN=elsewhere.test", "DNS:elsewhere.test", 30);
  client_ = make_signed("client", "/CN=worker", "", 30);
}

void TestCertificates::openssl(const std::vector<std::string>& args) const {
  std::vector<std::string> argv{"openssl"};
  argv.insert(argv.end(), args.begin(), args.end());
  ChildProcess child(argv, inherited_env({}));
  const auto code = child.wait_exit(std::chrono::seconds(30));
  if (code != 0) throw std::runtime_error("openssl " + args.front() + " failed: " + child.output());
}

TestCertificates::Pair TestCertificates::make_ca(const std::string& name) {
  Pair p{dir_ / (name + ".pem"), dir_ / (name + ".key")};
  openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
           p.key.string(), "-out", p.cert.string(), "-days", "30", "-subj", "/CN=" + name});
  return p;
}

TestCertificates::Pair TestCertificates::make_signed(const std::string& name, const std::string& subject,
                                                     const std::string& alt_names, int days) {
  Pair p{dir_ / (name + ".pem"), dir_ / (name + ".key")};
  const auto csr = dir_ / (name + ".csr");
  openssl({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", p.key.string(),
           "-out", csr.string(), "-subj", subject});
  std::vector<std::string> sign{"x509",
                                "-req",
                                "-in",
                                csr.string(),
                                "-CA",
                                ca_.cert.string(),
                                "-CAkey",
                                ca_.key.string(),
                                "-CAcreateserial",
                                "-out",
                                p.cert.string(),
                                "-days",
                                std::to_string(days)};
  if (!alt_names.empty()) {
    const auto ext = dir_ / (name + ".ext");
    std::ofstream(ext) << "subjectAltName=" << alt_names << "\n";
    sign.insert(sign.end(), {"-extfile", ext.string()});
  }
  openssl(sign);
  return p;
}

}  // namespace wk::test
