#include "redis/redis.hpp"

#include <hiredis/hiredis.h>
#include <sys/socket.h>

#include <array>
#include <charconv>
#include <cstdio>

#include "digest/digest.hpp"
#include "redis/transport.hpp"

namespace wk::redis {

// ---- ReplyView / Reply --------------------------------------------------------------------------

bool ReplyView::is_nil() const noexcept { return reply_ == nullptr || reply_->type == REDIS_REPLY_NIL; }
bool ReplyView::is_error() const noexcept { return reply_ != nullptr && reply_->type == REDIS_REPLY_ERROR; }
const ReplyView& ReplyView::throw_if_error() const {
  if (is_error()) throw Error(Error::Kind::reply, std::string(str()));
  return *this;
}
bool ReplyView::is_string() const noexcept {
  return reply_ != nullptr && (reply_->type == REDIS_REPLY_STRING || reply_->type == REDIS_REPLY_STATUS);
}
bool ReplyView::is_integer() const noexcept {
  return reply_ != nullptr && reply_->type == REDIS_REPLY_INTEGER;
}
bool ReplyView::is_array() const noexcept { return reply_ != nullptr && reply_->type == REDIS_REPLY_ARRAY; }

std::string_view ReplyView::str() const {
  if (reply_ == nullptr || (reply_->type != REDIS_REPLY_STRING && reply_->type != REDIS_REPLY_STATUS &&
                            reply_->type != REDIS_REPLY_ERROR)) {
    throw Error(Error::Kind::reply, "unexpected reply type (wanted a string)");
  }
  return {reply_->str, reply_->len};
}
long long ReplyView::integer() const {
  if (!is_integer()) throw Error(Error::Kind::reply, "unexpected reply type (wanted an integer)");
  return reply_->integer;
}
size_t ReplyView::size() const noexcept { return is_array() ? reply_->elements : 0; }
ReplyView ReplyView::operator[](size_t i) const {
  if (i >= size()) throw Error(Error::Kind::reply, "reply index out of range");
  return ReplyView(reply_->element[i]);
}

Reply::Reply(redisReply* reply) : ReplyView(reply), owned_(reply) {}
Reply::Reply(Reply&& other) noexcept : ReplyView(other.owned_), owned_(other.owned_) {
  other.owned_ = nullptr;
  other.reply_ = nullptr;
}
Reply& Reply::operator=(Reply&& other) noexcept {
  if (this != &other) {
    if (owned_ != nullptr) freeReplyObject(owned_);
    owned_ = other.owned_;
    reply_ = other.owned_;
    other.owned_ = nullptr;
    other.reply_ = nullptr;
  }
  return *this;
}
Reply::~Reply() {
  if (owned_ != nullptr) freeReplyObject(owned_);
}

Script::Script(std::string src) : source(std::move(src)), sha1(digest::sha1_hex(source)) {}

// ---- Connection ---------------------------------------------------------------------------------

void Connection::ReaderFree::operator()(redisReader* reader) const noexcept { redisReaderFree(reader); }

Address Address::parse(std::string_view text) {
  const size_t colon = text.rfind(':');
  Address a{std::string(text.substr(0, colon)), 0};
  if (colon != std::string_view::npos) {
    const std::string_view port = text.substr(colon + 1);
    if (std::from_chars(port.data(), port.data() + port.size(), a.port).ec != std::errc()) a.port = 0;
  }
  return a;
}

std::string Settings::address() const {
  if (cluster) return "cluster";
  if (sentinel) return "master " + sentinel->options().master_name + " (sentinels)";
  return host + ":" + std::to_string(port);
}

Connection::Connection(Settings settings) : settings_(std::move(settings)), address_(settings_.address()) {
  if (settings_.cluster) {
    route_through_cluster();
    return;
  }
  connect();
}

Connection::~Connection() { mark_broken(); }

void Connection::mark_broken() {
  std::lock_guard lock(fd_mu_);
  transport_.reset();
  reader_.reset();
  fd_ = -1;
  unread_ = 0;
  pending_.clear();
  loaded_scripts_.clear();
}

void Connection::connect() {
  mark_broken();
  std::string host = settings_.host;
  int port = settings_.port;
  if (settings_.sentinel) {
    generation_ = settings_.sentinel->generation();
    const Address master = settings_.sentinel->master();  // throws, with its own text
    host = master.host;
    port = master.port;
  }
  address_ = host + ":" + std::to_string(port);
  try {
    auto transport = std::make_unique<Transport>(host, port, settings_.connect_timeout, settings_.tls.get());
    if (!transport->set_timeout(settings_.command_timeout)) {
      throw Error(Error::Kind::connection, transport->error());
    }
    reader_.reset(redisReaderCreate());
    if (!reader_) throw Error(Error::Kind::connection, "out of memory");
    std::lock_guard lock(fd_mu_);
    fd_ = transport->fd();
    transport_ = std::move(transport);
  } catch (const Error& e) {
    throw Error(e.kind(), "redis " + address_ + ": " + e.what());
  }
  // AUTH and SELECT on every (re)connect. The password never appears in an error text.
  if (!settings_.password.empty()) {
    Reply auth = settings_.username.empty()
                     ? command_raw(std::initializer_list<std::string_view>{"AUTH", settings_.password})
                     : command_raw(std::initializer_list<std::string_view>{"AUTH", settings_.username,
                                                                           settings_.password});
    if (auth.is_error()) {
      const std::string why(auth.str());
      mark_broken();
      throw Error(Error::Kind::connection, "redis " + address_ + ": AUTH failed: " + why);
    }
  }
  if (settings_.db != 0) {
    const std::string db = std::to_string(settings_.db);
    Reply select = command_raw(std::initializer_list<std::string_view>{"SELECT", db});
    if (select.is_error()) {
      const std::string why(select.str());
      mark_broken();
      throw Error(Error::Kind::connection, "redis " + address_ + ": SELECT " + db + " failed: " + why);
    }
  }
  if (settings_.sentinel) {
    // The sentinels may still name a master that a failover just demoted.
    Reply role = command_raw(std::initializer_list<std::string_view>{"ROLE"});
    if (role.is_error() || role.size() == 0 || !role[0].is_string() || role[0].str() != "master") {
      mark_broken();
      throw Error(Error::Kind::connection, "redis " + address_ + ": not the master of " +
                                               settings_.sentinel->options().master_name +
                                               " (a failover in progress?)");
    }
  }
}

void Connection::ensure_connected() {
  // A failover announced since this connection was made: reconnect, unless a pipeline is half
  // written (its replies belong to the server it went to).
  const bool stale = settings_.sentinel && unread_ == 0 && settings_.sentinel->generation() != generation_;
  if (transport_ == nullptr || stale) connect();
}

void Connection::fail_io(const char* during) {
  mark_broken();
  throw Error(Error::Kind::connection, "redis " + address_ + ": " + during);
}

void Connection::fail_transport() {
  const Error::Kind kind = transport_->setting_error() ? Error::Kind::setting : Error::Kind::connection;
  const std::string why = transport_->error();
  mark_broken();
  throw Error(kind, "redis " + address_ + ": " + why);
}

void Connection::flush() {
  if (pending_.empty()) return;
  if (!transport_->write_all(pending_)) fail_transport();
  pending_.clear();
  if (pending_.capacity() > kMaxKeptBuffer) std::string().swap(pending_);  // not a huge payload's buffer
}

std::optional<Reply> Connection::parsed_reply() {
  void* raw = nullptr;
  if (redisReaderGetReply(reader_.get(), &raw) != REDIS_OK) {
    const std::string why = std::string("protocol error: ") + reader_->errstr;
    fail_io(why.c_str());
  }
  if (raw == nullptr) return std::nullopt;
  return Reply(static_cast<redisReply*>(raw));
}

void Connection::read_more() {
  std::array<char, 16384> buffer{};
  const size_t n = transport_->read_some(buffer.data(), buffer.size());
  if (n == 0) fail_transport();
  if (redisReaderFeed(reader_.get(), buffer.data(), n) != REDIS_OK) fail_io("out of memory");
}

Reply Connection::read_one() {
  if (routed_) return routed_read();
  flush();
  while (true) {
    if (auto reply = parsed_reply()) {
      --unread_;
      // A master demoted by a failover answers writes with READONLY and unblocks blocked
      // clients with UNBLOCKED: this connection reached a replica. Reconnecting finds the
      // master (through the sentinels, or a DNS name a managed service moved).
      if (reply->is_error() &&
          (reply->str().starts_with("READONLY") || reply->str().starts_with("UNBLOCKED"))) {
        const std::string why(reply->str());
        mark_broken();
        throw Error(Error::Kind::connection, "redis " + address_ + ": " + why);
      }
      return std::move(*reply);
    }
    read_more();
  }
}

void Connection::append(Argv argv) {
  if (routed_) {
    routed_append(argv);
    return;
  }
  ensure_connected();
  // RESP formatted here, straight into the output buffer (hiredis' own formatter builds an sds
  // per argument with a printf-like function: a few allocations and ~5 % of the host's CPU per
  // task).
  std::string& out = pending_;
  const auto put_len = [&out](char kind, size_t n) {
    std::array<char, 24> digits{};
    const auto [end, ec] = std::to_chars(digits.data(), digits.data() + digits.size(), n);
    out.push_back(kind);
    out.append(digits.data(), end);
    out.append("\r\n");
  };
  put_len('*', argv.size());
  for (std::string_view a : argv) {
    put_len('$', a.size());
    out.append(a);
    out.append("\r\n");
  }
  ++unread_;
}

Reply Connection::read_reply() {
  if (routed_) return routed_read();
  if (transport_ == nullptr) throw Error(Error::Kind::connection, "redis " + address_ + ": not connected");
  return read_one();
}

Reply Connection::command_raw(Argv argv) {
  append(argv);
  return read_one();
}

Reply Connection::command(Argv argv) {
  Reply reply = command_raw(argv);
  reply.throw_if_error();
  return reply;
}

Reply Connection::eval(const Script& script, Argv keys_and_args, size_t numkeys) {
  const std::string nk = std::to_string(numkeys);
  std::vector<std::string_view> argv;
  argv.reserve(3 + keys_and_args.size());
  argv.emplace_back("EVALSHA");
  argv.emplace_back(script.sha1);
  argv.emplace_back(nk);
  argv.insert(argv.end(), keys_and_args.begin(), keys_and_args.end());
  Reply reply = command_raw(argv);
  if (reply.is_error() && reply.str().starts_with("NOSCRIPT")) {
    argv[0] = "EVAL";
    argv[1] = script.source;  // EVAL also caches the script for the next EVALSHA
    reply = command_raw(argv);
  }
  reply.throw_if_error();
  return reply;
}

void Connection::eval_all(std::span<ScriptCall> calls) {
  std::vector<std::string_view> argv;
  std::array<char, 24> nk{};
  for (ScriptCall& c : calls) {
    const auto [nk_end, ec] = std::to_chars(nk.data(), nk.data() + nk.size(), c.numkeys);
    argv.assign(
        {"EVALSHA", c.script->sha1, std::string_view(nk.data(), static_cast<size_t>(nk_end - nk.data()))});
    argv.insert(argv.end(), c.keys_and_args.begin(), c.keys_and_args.end());
    append(argv);  // copies the arguments into the output buffer at once
  }
  bool noscript = false;
  for (ScriptCall& c : calls) {
    c.reply.emplace(read_reply());
    noscript = noscript || (c.reply->is_error() && c.reply->str().starts_with("NOSCRIPT"));
  }
  if (!noscript) return;
  for (ScriptCall& c : calls) {
    if (!c.reply->is_error() || !c.reply->str().starts_with("NOSCRIPT")) continue;
    const std::string numkeys = std::to_string(c.numkeys);
    argv.assign({"EVAL", c.script->source, numkeys});
    argv.insert(argv.end(), c.keys_and_args.begin(), c.keys_and_args.end());
    c.reply.emplace(command_raw(argv));
  }
}

void Connection::ensure_loaded(const Script& script) {
  if (routed_) {
    routed_ensure_loaded(script);
    return;
  }
  ensure_connected();
  if (loaded_scripts_.contains(script.sha1)) return;
  command({"SCRIPT", "LOAD", script.source});
  loaded_scripts_.insert(script.sha1);
}

void Connection::set_read_timeout(std::chrono::milliseconds timeout) {
  if (!transport_->set_timeout(timeout)) fail_transport();
}

std::pair<Reply, Reply> Connection::blocking_command_then(Argv argv, Argv then,
                                                          std::chrono::milliseconds block_for) {
  if (routed_) return routed_blocking(argv, then, block_for);
  ensure_connected();
  append(argv);
  append(then);
  flush();  // under the command timeout: a stalled write is an outage, not a long block
  set_read_timeout(block_for + settings_.command_timeout);
  Reply first = read_one();
  set_read_timeout(settings_.command_timeout);
  Reply second = read_one();
  first.throw_if_error();
  return {std::move(first), std::move(second)};
}

void Connection::interrupt() noexcept {
  if (routed_) {
    routed_interrupt();
    return;
  }
  std::lock_guard lock(fd_mu_);
  // Only shutdown(2), never close: the fd stays owned by the hiredis context, which sees EOF and
  // is then freed by the owning thread.
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
}

// ---- Pool ---------------------------------------------------------------------------------------

Pool::Pool(Settings settings, size_t size) : settings_(std::move(settings)), size_(size == 0 ? 1 : size) {}

Pool::~Pool() = default;

Pool::Lease Pool::acquire() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return !idle_.empty() || created_ < size_; });
  if (!idle_.empty()) {
    std::unique_ptr<Connection> conn = std::move(idle_.back());
    idle_.pop_back();
    return Lease(*this, std::move(conn));
  }
  ++created_;
  lock.unlock();
  try {
    return Lease(*this, std::make_unique<Connection>(settings_));
  } catch (...) {
    lock.lock();
    --created_;
    cv_.notify_one();
    throw;
  }
}

void Pool::give_back(std::unique_ptr<Connection> conn) {
  std::lock_guard lock(mu_);
  // A broken connection is kept: its next command reconnects, so the pool never shrinks below
  // what it has created. It also means the server went away (or restarted): the idle ones are
  // dead too, so they reconnect on their next use instead of each failing once more after the
  // server is back (which would report the outage again).
  if (conn->broken()) {
    for (auto& idle : idle_) idle->disconnect();
  } else if (conn->has_unread_replies()) {
    conn->disconnect();
  }
  idle_.push_back(std::move(conn));
  cv_.notify_one();
}

Pool::Lease::~Lease() {
  if (conn_) pool_->give_back(std::move(conn_));
}

}  // namespace wk::redis
